"""Several sweepers on one Optuna study in a real PostgreSQL server, as sweepers on several machines would run it:
each its own process and folder, one of them under another host name (a UTS namespace), so that only the
database and Optuna's heartbeat connect them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import CONF_DIR

pytestmark = pytest.mark.slow  # training processes against a database server

SEARCH = [
    "-m",
    "hparams_search=optuna",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "hydra.sweeper.heartbeat_interval=1",
    "hydra.sweeper.grace_period=3",
]


def sweeper(cwd: Path, data_dir: Path, url: str, study: str, *extra: str, host: str | None = None) -> subprocess.Popen:
    """`python -m mnist_lightning.train -m hparams_search=optuna` on the shared study, from its own folder (its own
    outputs/, like another machine); `host`: under that host name, in a UTS namespace of its own."""
    cwd.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "mnist_lightning.train",
        *SEARCH,
        f"hydra.sweeper.storage='{url}'",
        f"hydra.sweeper.study_name={study}",
        *extra,
    ]
    if host is not None:
        namespace = ["--uts"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--uts"]
        command = ["unshare", *namespace, "sh", "-c", 'hostname "$0" && exec "$@"', host, *command]
    env = {**os.environ, "MNIST_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def finished(process: subprocess.Popen, timeout: int = 400) -> str:
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-4000:]
    return stderr


def results(cwd: Path) -> dict:
    """optimization_results.json of the latest sweep started in cwd."""
    (latest, *_) = sorted((cwd / "outputs" / "multirun").glob("*/*/optimization_results.json"), reverse=True)
    return json.loads(latest.read_text())


def load(url: str, study: str):
    import optuna

    from mnist_lightning.training.pruning import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(url))


def test_two_sweepers_share_one_study_on_postgresql(tmp_path, mnist_dir, postgres_url):
    import optuna

    machines = [tmp_path / "machine-a", tmp_path / "machine-b"]
    started = [sweeper(cwd, mnist_dir, postgres_url, "shared", "hydra.sweeper.n_trials=3") for cwd in machines]
    for process in started:
        finished(process)

    trials = load(postgres_url, "shared").trials
    assert len(trials) == 6, "each sweeper ran its own 3 trials"
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6, "no point was drawn twice"
    owners = {Path(t.user_attrs["job_dir"]).relative_to(tmp_path).parts[0] for t in trials}
    assert owners == {"machine-a", "machine-b"}, "both sweepers ran trials"
    for trial in trials:  # each trial's own job folder, its run recorded, its validations reported to the study
        job = Path(trial.user_attrs["job_dir"])
        assert json.loads((job / "metrics.json").read_text())["state"] in ("finished", "pruned")
        assert trial.intermediate_values

    # the final report, asked for again from either machine: the same best trial, the study's
    for process in [sweeper(cwd, mnist_dir, postgres_url, "shared", "hydra.sweeper.n_trials=0") for cwd in machines]:
        finished(process)
    best = load(postgres_url, "shared").best_trial
    reports = [results(cwd) for cwd in machines]
    assert [r["best_trial"] for r in reports] == [best.number, best.number]
    assert [r["best_value"] for r in reports] == [best.value, best.value]
    assert all(r["n_trials"] == 6 for r in reports)


def test_a_killed_sweepers_trial_is_failed_by_its_heartbeat_and_run_again(tmp_path, mnist_dir, postgres_url):
    import optuna

    # machine A (another host name) starts a long trial and is killed in the middle of it
    doomed = sweeper(
        tmp_path / "machine-a",
        mnist_dir,
        postgres_url,
        "killed",
        "hydra.sweeper.n_trials=1",
        "trainer.limit_train_batches=5000",
        host="node-a",
    )
    # the sweeper draws the parameters one at a time and then starts the job: its folder is looked for before the
    # trial is read, so that the trial read has every parameter
    job_folders = tmp_path / "machine-a" / "outputs" / "multirun"
    deadline = time.monotonic() + 120
    running = []
    while time.monotonic() < deadline and doomed.poll() is None:
        if any(job_folders.glob("*/*/0")):
            running = load(postgres_url, "killed").get_trials(states=(optuna.trial.TrialState.RUNNING,))
            if running and "job_dir" not in running[0].user_attrs:
                break
        time.sleep(0.5)
    assert doomed.poll() is None, doomed.communicate()[1][-3000:]
    (orphan,) = running
    assert set(orphan.params) == set(OmegaConf.load(CONF_DIR / "hparams_search/optuna.yaml").hydra.sweeper.params)
    assert orphan.user_attrs["sweeper"]["host"] == "node-a"
    time.sleep(2)  # its heartbeat is recorded
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=30)
    time.sleep(4)  # longer than the grace period: the trial has no heartbeat any more

    # machine B cannot see A's processes: only the missing heartbeat tells it that the trial is abandoned
    stderr = finished(sweeper(tmp_path / "machine-b", mnist_dir, postgres_url, "killed", "hydra.sweeper.n_trials=1"))
    assert "left running by process" not in stderr
    trials = load(postgres_url, "killed").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    retried = trials[1]
    assert retried.system_attrs["failed_trial"] == orphan.number  # Optuna's record of the retry
    assert retried.params == orphan.params, "run again with the same parameters"
    assert Path(retried.user_attrs["job_dir"]).is_relative_to(tmp_path / "machine-b")
    assert results(tmp_path / "machine-b")["states"]["FAIL"] == 1
