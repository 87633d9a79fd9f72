"""Multirun grids, the Optuna sweeper (SQLite resume, pruning), launchers and the run summary."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import run_cli
from mnist_lightning import summarize
from mnist_lightning.runs import layout, lock, record
from mnist_lightning.runs.summary import summarize as summarize_runs
from mnist_lightning.training.pruning import OptunaPruning, open_storage

TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted((cwd / "outputs" / "multirun").glob("*/*"))


def job_metrics(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


@pytest.mark.slow
def test_grid_sweep_writes_a_run_per_job_and_a_summary(tmp_path, mnist_dir):
    result = run_cli(
        "mnist_lightning.train",
        "-m",
        "model.optimizer.lr=1e-3,3e-3",
        "data.batch_size=64,128",
        *TINY,
        cwd=tmp_path,
        data_dir=mnist_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    metrics = job_metrics(sweep)
    assert sorted(metrics) == ["0", "1", "2", "3"]
    for job, m in metrics.items():
        assert m["state"] == "finished" and (sweep / job / m["best_checkpoint"]).is_file()
        assert (sweep / job / ".hydra" / "config.yaml").is_file()
    rows, _ = summarize_runs(sweep)
    assert len(rows) == 4 and (sweep / "summary.csv").is_file() and (sweep / "summary.md").is_file()
    assert {r["overrides"] for r in rows} == {
        f"model.optimizer.lr={lr} data.batch_size={bs}" for lr in ("0.001", "0.003") for bs in (64, 128)
    }
    accs = [r["val/acc_best"] for r in rows]
    assert accs == sorted(accs, reverse=True)


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep_but_fails_the_command(tmp_path, mnist_dir):
    result = run_cli("mnist_lightning.train", "-m", "data.batch_size=0,64", *TINY, cwd=tmp_path, data_dir=mnist_dir)
    assert result.returncode == 1, result.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    metrics = job_metrics(sweep)
    assert metrics["0"]["state"] == "failed" and "data.batch_size=0" in metrics["0"]["error"]
    assert metrics["1"]["state"] == "finished"
    assert "1 of 2 jobs failed" in result.stderr and f"{sweep / '0'}: UserError: data.batch_size=0" in result.stderr
    rows, _ = summarize_runs(sweep)
    assert [r["state"] for r in rows] == ["finished", "failed"]


@pytest.mark.slow
def test_a_sweep_whose_every_job_failed_exits_non_zero(tmp_path, mnist_dir):
    result = run_cli("mnist_lightning.train", "-m", "data.batch_size=0,-1", *TINY, cwd=tmp_path, data_dir=mnist_dir)
    assert result.returncode == 1
    assert "2 of 2 jobs failed" in result.stderr


def optuna_run(cwd, mnist_dir, *extra):
    return run_cli(
        "mnist_lightning.train",
        "-m",
        "hparams_search=optuna",
        *TINY,
        "trainer.max_epochs=2",
        "hydra.sweeper.params={model.optimizer.lr:'tag(log, interval(1e-3, 3e-3))'}",
        *extra,
        cwd=cwd,
        data_dir=mnist_dir,
    )


@pytest.mark.slow
def test_optuna_study_resumes_with_new_points_and_fails_orphaned_trials(tmp_path, mnist_dir):
    import optuna

    cwd = tmp_path / "my study, 'v1'"  # a storage path that needs quoting in the trial's override
    cwd.mkdir()
    first = optuna_run(cwd, mnist_dir, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, first.stderr[-3000:]
    journal = cwd / "outputs" / "studies" / "mnist_cnn.journal"
    assert journal.is_file()
    storage = open_storage(str(journal))
    before = optuna.load_study(study_name="mnist_cnn", storage=storage).trials
    assert len(before) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in before)
    assert all(Path(t.user_attrs["job_dir"]).parent == sweep_dirs(cwd)[0] for t in before)

    # a sweeper killed while its trial ran left it RUNNING: the next search marks it failed
    study = optuna.load_study(study_name="mnist_cnn", storage=storage)
    orphan = study.ask()
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan.set_user_attr("sweeper", {**lock.this_process(), "pid": gone.pid})

    second = optuna_run(cwd, mnist_dir, "hydra.sweeper.n_trials=1")
    assert second.returncode == 0, second.stderr[-3000:]
    after = optuna.load_study(study_name="mnist_cnn", storage=open_storage(str(journal))).trials
    assert len(after) == 4 and [t.params for t in after[:2]] == [t.params for t in before]
    assert after[2].state == optuna.trial.TrialState.FAIL, "the orphaned trial"
    assert after[3].state == optuna.trial.TrialState.COMPLETE
    # the same sampler seed, but a resumed study draws new points, not its first trial's again
    assert after[3].params != after[0].params
    assert "3 earlier trials" in second.stdout + second.stderr
    results = json.loads((sweep_dirs(cwd)[-1] / "optimization_results.json").read_text())
    assert results["n_trials"] == 4 and "model.optimizer.lr" in results["best_params"]
    by_number = {t["number"]: t for t in results["trials"]}
    assert by_number[3]["job_dir"] == str(sweep_dirs(cwd)[-1] / "0") and by_number[2]["state"] == "FAIL"
    assert by_number[results["best_trial"]]["job_dir"] == results["best_job_dir"]


@pytest.mark.slow
def test_a_resumed_trial_job_trains_on_without_reporting_to_its_finished_trial(tmp_path, mnist_dir):
    import optuna

    result = optuna_run(tmp_path, mnist_dir, "hydra.sweeper.n_trials=1", "callbacks.model_checkpoint.save_top_k=-1")
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    (first_epoch,) = (sweep / "0" / "checkpoints").glob("epoch_00-*.ckpt")
    resumed = run_cli("mnist_lightning.train", f"ckpt_path={first_epoch}", cwd=tmp_path, data_dir=mnist_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumes as a plain run that no longer reports to the study" in resumed.stderr
    assert "UpdateFinishedTrialError" not in resumed.stderr
    metrics = job_metrics(sweep)["0"]
    assert metrics["state"] == "finished" and len(metrics["resumes"]) == 1
    study = optuna.load_study(
        study_name="mnist_cnn", storage=open_storage(str(tmp_path / "outputs/studies/mnist_cnn.journal"))
    )
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and list(trial.intermediate_values) == [0, 1]


@pytest.mark.slow
def test_a_misspelt_optimized_metric_stops_the_search_before_any_trial(tmp_path, mnist_dir):
    result = optuna_run(tmp_path, mnist_dir, "optimized_metric=val/acc_bst")
    assert result.returncode != 0
    assert "optimized_metric=val/acc_bst: the model logs no such metric; choose one of" in result.stderr
    assert "val/acc_best" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "outputs" / "multirun").glob("*/*/0"))


@pytest.mark.slow
def test_sampled_configurations_that_do_not_compose_fail_only_their_trials(tmp_path, mnist_dir):
    import optuna

    result = optuna_run(
        tmp_path, mnist_dir, "hydra.sweeper.n_trials=2", "hydra.sweeper.params={optimizer:'choice(nosuch)'}"
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "2 of 2 jobs failed" in result.stderr and "Traceback" not in result.stderr
    (sweep,) = sweep_dirs(tmp_path)
    metrics = job_metrics(sweep)
    assert sorted(metrics) == ["0", "1"] and all("nosuch" in m["error"] for m in metrics.values())
    study = optuna.load_study(
        study_name="mnist_cnn", storage=open_storage(str(tmp_path / "outputs/studies/mnist_cnn.journal"))
    )
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2


@pytest.mark.slow
def test_two_trials_in_parallel_processes_share_the_study(tmp_path, mnist_dir):
    import optuna

    result = optuna_run(
        tmp_path,
        mnist_dir,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "database is locked" not in result.stderr
    study = optuna.load_study(
        study_name="mnist_cnn", storage=open_storage(str(tmp_path / "outputs/studies/mnist_cnn.journal"))
    )
    assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all(len(t.intermediate_values) == 2 for t in study.trials)  # both jobs reported from their processes
    assert len({t.user_attrs["job_dir"] for t in study.trials}) == 2


@pytest.mark.slow
def test_an_unpromising_trial_is_pruned(tmp_path, mnist_dir):
    import optuna

    database = tmp_path / "prune.db"
    storage = f"sqlite:///{database}"
    study = optuna.create_study(study_name="prune", storage=storage, direction="maximize")
    distributions = {"model.optimizer.lr": optuna.distributions.FloatDistribution(1e-8, 1e-2, log=True)}
    study.add_trial(
        optuna.trial.create_trial(
            params={"model.optimizer.lr": 3e-3},
            distributions=distributions,
            value=0.99,
            intermediate_values={0: 0.99, 1: 0.99},
        )
    )
    result = optuna_run(
        tmp_path,
        mnist_dir,
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.study_name=prune",
        f"hydra.sweeper.storage='{storage}'",
        "hydra.sweeper.params={model.optimizer.lr:'tag(log, interval(1e-8, 2e-8))'}",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trial = optuna.load_study(study_name="prune", storage=storage).trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED and list(trial.intermediate_values) == [0]
    assert result.returncode == 0  # a pruned trial is not a failed job
    (sweep,) = sweep_dirs(tmp_path)
    assert job_metrics(sweep)["0"]["state"] == "pruned" and job_metrics(sweep)["0"]["epochs"] == 1
    rows, _ = summarize_runs(sweep)
    assert rows[0]["state"] == "pruned"


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launchers_run_the_jobs_and_seeds_are_aggregated(launcher, tmp_path, mnist_dir):
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    result = run_cli(
        "mnist_lightning.train",
        "-m",
        f"hydra/launcher={launcher}",
        *extra,
        "seed=1,2",
        *TINY,
        cwd=tmp_path,
        data_dir=mnist_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    metrics = job_metrics(sweep)
    assert sorted(metrics) == ["0", "1"] and {m["seed"] for m in metrics.values()} == {1, 2}
    assert all(m["state"] == "finished" for m in metrics.values())
    rows, groups = summarize_runs(sweep)
    assert len(groups) == 1 and groups[0]["runs"] == 2
    mean, std = groups[0]["test/acc"]
    accs = [m["test/acc"] for m in metrics.values()]
    assert mean == pytest.approx(statistics.mean(accs)) and std == pytest.approx(statistics.stdev(accs))
    assert "±" in (sweep / "summary.md").read_text()


def test_summarize_cli_on_an_empty_folder(tmp_path):
    assert summarize.main([str(tmp_path)]) == 2  # no runs there: the user's folder, as a missing one
    assert summarize.main([str(tmp_path / "missing")]) == 2


def test_training_runs_skips_evaluate_and_predict_folders(tmp_path):
    for name, log in (("a", "train.log"), ("b", "evaluate.log"), ("c", "predict.log")):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / log).write_text("")
    assert [run.path for run in layout.training_runs(tmp_path)] == [tmp_path / "a"]


def test_summarize_cli_takes_a_folder_or_the_outputs_root(tmp_path, monkeypatch, capsys):
    run = tmp_path / "elsewhere" / "2026-01-01" / "10-00-00-000000-1"
    (run / ".hydra").mkdir(parents=True)
    (run / "train.log").write_text("")
    layout.write_metrics(run, {"state": "finished", "val/acc_best": 0.99, "test/acc": 0.98, "epochs": 1})
    monkeypatch.chdir(tmp_path)
    assert summarize.main([f"paths.outputs_root={tmp_path / 'elsewhere'}"]) == 0
    assert "| 2026-01-01/10-00-00-000000-1 |  | 99.00% | 98.00% |  | 1 |  | finished |" in capsys.readouterr().out
    assert summarize.main(["elsewhere"]) == 0 and (tmp_path / "elsewhere" / "summary.md").is_file()
    assert summarize.main(["dir=elsewhere", "nosuch.key=1"]) == 2  # an override of nothing: one line, no traceback


def test_a_hundred_job_sweep_is_summarised_with_every_failed_job_and_its_error(tmp_path, capsys):
    """The shape of a 100-job grid (benchmarks/grid.py runs a real one and times summarize on it)."""
    import yaml

    for job in range(100):
        folder = tmp_path / str(job)
        (folder / ".hydra").mkdir(parents=True)
        (folder / "train.log").write_text("")
        batch = 0 if job % 10 == 9 else 64
        (folder / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"seed={job // 10}", f"data.batch_size={batch}"])
        )
        metrics = {"state": "finished", "val/acc_best": 0.5 + job / 1000, "test/acc": 0.5, "epochs": 1}
        if batch == 0:
            metrics = {"state": "failed", "error": "UserError: data.batch_size=0: must be an integer >= 1"}
        layout.write_metrics(folder, metrics)
    assert summarize.main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    rows, _ = summarize_runs(tmp_path)
    assert len(rows) == 100 and [r["state"] for r in rows].count("failed") == 10
    assert "Failed (10 of 100 runs):" in printed
    for job in range(9, 100, 10):
        assert f"- {job}: UserError: data.batch_size=0: must be an integer >= 1" in printed
    failed_csv = [line for line in (tmp_path / "summary.csv").read_text().splitlines() if ",failed," in line]
    assert len(failed_csv) == 10 and all(line.endswith("must be an integer >= 1") for line in failed_csv)


def test_summaries_mark_runs_tested_on_part_of_a_split_and_rank_them_after_full_ones(tmp_path):
    full = {"state": "finished", "val/acc_best": 0.99, "val_samples": 5000, "val_split_size": 5000}
    limited = {**full, "val/acc_best": 1.0, "test_samples": 128, "test_split_size": 10000}  # debug=limit
    for name, metrics in (("full", full), ("limited", limited)):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / "train.log").write_text("")
        layout.write_metrics(tmp_path / name, metrics)
    rows, _ = summarize_runs(tmp_path)
    assert [(r["run"], r["partial"]) for r in rows] == [("full", ""), ("limited", "yes")]
    assert "on 128 of 10,000 images: partial" in record.summary(
        tmp_path,
        {**limited, "test/acc": 1.0, "test/loss": 0.1, "best_checkpoint": None, "epochs": 1, "wall_time_s": 1.0},
    )


def validation(trainer_epoch: int, **metrics) -> SimpleNamespace:
    """A trainer as the pruning callback sees it at the end of one validation."""
    return SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        current_epoch=trainer_epoch,
        should_stop=False,
        callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
        strategy=SimpleNamespace(broadcast=lambda value: value),
    )


def study_with_a_strong_trial(tmp_path, direction: str = "maximize"):
    import optuna

    storage = str(tmp_path / "study.journal")
    study = optuna.create_study(study_name="s", storage=open_storage(storage), direction=direction)
    good = 0.99 if direction == "maximize" else 0.01
    study.add_trial(optuna.trial.create_trial(value=good, intermediate_values={0: good, 1: good, 2: good}))
    return storage, study


def test_pruning_reports_every_validation_of_the_searched_metric(tmp_path):
    import optuna

    storage, study = study_with_a_strong_trial(tmp_path, direction="minimize")
    number = study.ask().number
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=2)
    callback = OptunaPruning(storage, "s", number, pruner=pruner, monitor="val/loss")
    for loss in (0.5, 0.4, 0.3):  # three validations within epoch 0 (val_check_interval < 1)
        trainer = validation(0, **{"val/loss": loss, "val/acc": 0.5})
        callback.on_validation_end(trainer, None)
    trial = optuna.load_study(study_name="s", storage=open_storage(storage)).trials[-1]
    assert trial.intermediate_values == pytest.approx({0: 0.5, 1: 0.4, 2: 0.3})
    assert trainer.should_stop and callback.pruned_at_epoch == 0  # worse than the median at step 2: pruned


def test_pruner_null_means_no_pruning(tmp_path):
    storage, study = study_with_a_strong_trial(tmp_path)
    number = study.ask().number
    callback = OptunaPruning(storage, "s", number, pruner=None, monitor="val/acc_best")
    for step in range(3):
        trainer = validation(step, **{"val/acc_best": 0.1})
        callback.on_validation_end(trainer, None)
        assert not trainer.should_stop
    assert callback.pruned_at_epoch is None and callback.reports == 3


def test_a_trial_failed_elsewhere_while_it_ran_keeps_its_failure_and_the_sweeper_goes_on(tmp_path, caplog):
    """Its heartbeat was late (a paused machine), so another sweeper failed it and queued it again."""
    import optuna

    from hydra_plugins.mnist_lightning_optuna.optuna_sweeper import OptunaSweeper

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    trial = study.ask()
    storage.set_trial_state_values(
        storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("s"), trial.number),
        state=optuna.trial.TrialState.FAIL,
    )
    job = tmp_path / "0"
    result = SimpleNamespace(
        return_value=0.9, hydra_cfg=SimpleNamespace(hydra=SimpleNamespace(runtime=SimpleNamespace(output_dir=str(job))))
    )
    OptunaSweeper._tell(study, trial, result)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL and study.trials[0].value is None
    assert "was failed by another sweeper while it ran" in caplog.text


@pytest.mark.parametrize(
    "setting", [{"heartbeat_interval": -1}, {"grace_period": "abc"}, {"max_retry": -2}, {"heartbeat_interval": 0.5}]
)
def test_heartbeat_and_retry_settings_that_cannot_work_are_refused_by_name(setting):
    from hydra_plugins.mnist_lightning_optuna.optuna_sweeper import OptunaSweeper, SearchError

    base = {"study_name": "s", "storage": None, "direction": "maximize", "n_trials": 1, "n_jobs": 1}
    base |= {"sampler": None, "pruner": None, "params": {}}
    (name,) = setting
    with pytest.raises(SearchError, match=rf"hydra.sweeper.{name}="):
        OptunaSweeper(**base, **setting)


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        # nothing listens on port 1: refused at once; the password is never printed
        ("postgresql+psycopg://optuna:hunter22@127.0.0.1:1/optuna", "the study's database cannot be opened"),
        ("redis://127.0.0.1:6379", "no database driver reads redis:// URLs; give a PostgreSQL, MySQL or SQLite URL"),
        ("postgresql+psycopg://optuna:hunter22@127.0.0.1:notaport/optuna", "not a database URL"),
    ],
)
def test_a_storage_that_cannot_be_opened_is_one_line_naming_the_setting(spec, shown):
    from hydra_plugins.mnist_lightning_optuna.optuna_sweeper import SearchError, storage_errors

    with pytest.raises(SearchError) as refused, storage_errors(spec):
        open_storage(spec)
    message = str(refused.value)
    assert message.startswith("hydra.sweeper.storage=") and shown in message, message
    assert "hunter22" not in message and "\n" not in message


@pytest.mark.slow
def test_an_unreachable_search_database_stops_the_search_in_one_line(tmp_path, mnist_dir):
    result = optuna_run(
        tmp_path, mnist_dir, "hydra.sweeper.storage='postgresql+psycopg://optuna:hunter22@127.0.0.1:1/x'"
    )
    assert result.returncode != 0
    assert (
        "hydra.sweeper.storage=postgresql+psycopg://optuna:***@127.0.0.1:1/x: the study's database cannot be opened"
        in (result.stderr)
    )
    assert "Traceback" not in result.stderr and "hunter22" not in result.stderr
    assert not list((tmp_path / "outputs" / "multirun").glob("*/*/0"))
