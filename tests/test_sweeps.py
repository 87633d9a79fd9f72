"""Multirun grids, the Optuna sweeper (SQLite resume, pruning), launchers and the run summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from mnist_lightning import runs, summarize

TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=5", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "logger=none", "trainer.enable_progress_bar=false"]


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted((cwd / "outputs" / "multirun").glob("*/*"))


def job_metrics(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


def test_grid_sweep_writes_a_run_per_job_and_a_summary(tmp_path, mnist_dir):
    result = run_cli("mnist_lightning.train", "-m", "model.optimizer.lr=1e-3,3e-3", "data.batch_size=64,128", *TINY,
                     cwd=tmp_path, data_dir=mnist_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    metrics = job_metrics(sweep)
    assert sorted(metrics) == ["0", "1", "2", "3"]
    for job, m in metrics.items():
        assert m["state"] == "finished" and (sweep / job / m["best_checkpoint"]).is_file()
        assert (sweep / job / ".hydra" / "config.yaml").is_file()
    rows, _ = summarize.summarize(sweep)
    assert len(rows) == 4 and (sweep / "summary.csv").is_file() and (sweep / "summary.md").is_file()
    assert {r["overrides"] for r in rows} == {f"model.optimizer.lr={lr} data.batch_size={bs}"
                                             for lr in ("0.001", "0.003") for bs in (64, 128)}
    accs = [r["val/acc_best"] for r in rows]
    assert accs == sorted(accs, reverse=True)


def test_a_failing_job_does_not_stop_the_sweep(tmp_path, mnist_dir):
    result = run_cli("mnist_lightning.train", "-m", "data.batch_size=0,64", *TINY, cwd=tmp_path, data_dir=mnist_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    metrics = job_metrics(sweep)
    assert metrics["0"]["state"] == "failed" and "data.batch_size=0" in metrics["0"]["error"]
    assert metrics["1"]["state"] == "finished"
    rows, _ = summarize.summarize(sweep)
    assert [r["state"] for r in rows] == ["finished", "failed"]


def optuna_run(cwd, mnist_dir, *extra):
    return run_cli("mnist_lightning.train", "-m", "hparams_search=optuna", *TINY, "trainer.max_epochs=2",
                   "hydra.sweeper.params={model.optimizer.lr:'tag(log, interval(1e-3, 3e-3))'}", *extra,
                   cwd=cwd, data_dir=mnist_dir)


def test_optuna_study_is_stored_in_sqlite_and_resumes(tmp_path, mnist_dir):
    import optuna

    first = optuna_run(tmp_path, mnist_dir, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, first.stderr[-3000:]
    database = tmp_path / "outputs" / "studies" / "mnist_cnn.db"
    assert database.is_file()
    storage = f"sqlite:///{database}"
    before = optuna.load_study(study_name="mnist_cnn", storage=storage).trials
    assert len(before) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in before)

    second = optuna_run(tmp_path, mnist_dir, "hydra.sweeper.n_trials=1")
    assert second.returncode == 0, second.stderr[-3000:]
    after = optuna.load_study(study_name="mnist_cnn", storage=storage).trials
    assert len(after) == 3 and [t.params for t in after[:2]] == [t.params for t in before]
    assert "2 earlier trials" in second.stdout + second.stderr
    results = json.loads((sweep_dirs(tmp_path)[-1] / "optimization_results.json").read_text())
    assert results["trials"] == 3 and "model.optimizer.lr" in results["best_params"]


def test_an_unpromising_trial_is_pruned(tmp_path, mnist_dir):
    import optuna

    database = tmp_path / "prune.db"
    storage = f"sqlite:///{database}"
    study = optuna.create_study(study_name="prune", storage=storage, direction="maximize")
    distributions = {"model.optimizer.lr": optuna.distributions.FloatDistribution(1e-8, 1e-2, log=True)}
    study.add_trial(optuna.trial.create_trial(params={"model.optimizer.lr": 3e-3}, distributions=distributions,
                                              value=0.99, intermediate_values={0: 0.99, 1: 0.99}))
    result = optuna_run(tmp_path, mnist_dir, "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=prune",
                        f"hydra.sweeper.storage='{storage}'",
                        "hydra.sweeper.params={model.optimizer.lr:'tag(log, interval(1e-8, 2e-8))'}",
                        "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=0")
    assert result.returncode == 0, result.stderr[-3000:]
    trial = optuna.load_study(study_name="prune", storage=storage).trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED and list(trial.intermediate_values) == [0]
    (sweep,) = sweep_dirs(tmp_path)
    assert job_metrics(sweep)["0"]["state"] == "pruned" and job_metrics(sweep)["0"]["epochs"] == 1
    rows, _ = summarize.summarize(sweep)
    assert rows[0]["state"] == "pruned"


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launchers_run_the_jobs_and_seeds_are_aggregated(launcher, tmp_path, mnist_dir):
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    result = run_cli("mnist_lightning.train", "-m", f"hydra/launcher={launcher}", *extra, "seed=1,2", *TINY,
                     cwd=tmp_path, data_dir=mnist_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    metrics = job_metrics(sweep)
    assert sorted(metrics) == ["0", "1"] and {m["seed"] for m in metrics.values()} == {1, 2}
    assert all(m["state"] == "finished" for m in metrics.values())
    rows, groups = summarize.summarize(sweep)
    assert len(groups) == 1 and groups[0]["runs"] == 2
    mean, std = groups[0]["test/acc"]
    accs = [m["test/acc"] for m in metrics.values()]
    assert mean == pytest.approx(sum(accs) / 2) and std >= 0
    assert "±" in (sweep / "summary.md").read_text()


def test_summarize_cli_on_an_empty_folder(tmp_path):
    assert summarize.main([str(tmp_path)]) == 1
    assert summarize.main([str(tmp_path / "missing")]) == 2


def test_find_training_runs_skips_evaluate_and_predict_folders(tmp_path):
    for name, log in (("a", "train.log"), ("b", "evaluate.log"), ("c", "predict.log")):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / log).write_text("")
    assert runs.find_training_runs(tmp_path) == [tmp_path / "a"]
