"""Faults injected for real: SIGKILL and SIGTERM at a training step, kills during a checkpoint write, misuse."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import run_cli, run_dirs

pytestmark = pytest.mark.slow  # training processes killed and resumed

# Kill times are random so that kills land in different places across runs; the seed is printed (pytest shows it
# with a failure) and FAULT_SEED=<seed> replays the same times.
SEED = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(2**32))
print(f"test_fault: FAULT_SEED={SEED}")
RNG = random.Random(SEED)

# 2 epochs of 40 batches, a periodic last.ckpt every 7 steps, deterministic fp32: a kill can land anywhere
SHORT = [
    "trainer.deterministic=true",
    "trainer.precision=32-true",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=40",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
    "callbacks.periodic_checkpoint.every_n_train_steps=7",
    "seed=3",
]


def start(cwd: Path, data_dir: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "MNIST_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_lightning.train", *overrides],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(cwd: Path, proc: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((cwd / "outputs").glob("*/*/checkpoints/last.ckpt"))
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def final_state(run_dir: Path) -> tuple[dict, dict]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    weights = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return metrics, weights


def assert_same_run(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    (metrics_a, weights_a), (metrics_b, weights_b) = a, b
    assert metrics_b["state"] == "finished"
    for key in ("val/acc_best", "test/acc", "test/loss", "global_step", "epochs"):
        assert metrics_a[key] == metrics_b[key], (key, metrics_a[key], metrics_b[key])
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_dir):
    cwd = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli("mnist_lightning.train", *SHORT, cwd=cwd, data_dir=mnist_dir, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(cwd)
    return final_state(run_dir)


def test_sigkill_at_a_random_step_then_resume_gives_the_same_weights(tmp_path, mnist_dir, uninterrupted):
    proc = start(tmp_path, mnist_dir, *SHORT)
    wait_for_checkpoint(tmp_path, proc)
    delay = RNG.uniform(0.0, 4.0)
    print(f"FAULT_SEED={SEED}: SIGKILL {delay:.3f} s after the first checkpoint")
    time.sleep(delay)  # anywhere later: mid-epoch, in validation, or while a checkpoint is written
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    (run_dir,) = run_dirs(tmp_path)
    killed_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert (run_dir / ".train.lock").is_file(), "a killed process leaves its lock behind"

    result = run_cli("mnist_lightning.train", "ckpt_path=last", cwd=tmp_path, data_dir=mnist_dir, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dataloader is not resumable" not in result.stderr  # Lightning's warning: ours restores the position
    assert run_dirs(tmp_path) == [run_dir], "the resume must write into the same run folder"
    resumed = final_state(run_dir)
    assert resumed[0]["resumes"][0]["from"].endswith("last.ckpt")
    assert not (run_dir / ".train.lock").exists(), "the stale lock was taken over, then released"
    print(f"resumed from step {killed_at}")
    assert_same_run(uninterrupted, resumed)


def interrupt(cwd: Path, data_dir: Path, signum: int) -> tuple[Path, dict]:
    proc = start(cwd, data_dir, *SHORT)
    wait_for_checkpoint(cwd, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr and "ckpt_path=" in stderr
    assert "weights_only" not in stderr, "the interrupt's checkpoint is saved without Lightning's default notice"
    (run_dir,) = run_dirs(cwd)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["state"] == "interrupted" and metrics["signal"] == signal.Signals(signum).name
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    assert checkpoint["global_step"] == metrics["global_step"] > 0
    return run_dir, metrics


def test_sigterm_saves_a_checkpoint_marks_the_run_interrupted_and_resumes_exactly(tmp_path, mnist_dir, uninterrupted):
    run_dir, metrics = interrupt(tmp_path, mnist_dir, signal.SIGTERM)
    summary = run_cli("mnist_lightning.summarize", "outputs", cwd=tmp_path, data_dir=mnist_dir, timeout=120)
    assert "interrupted" in summary.stdout

    result = run_cli(
        "mnist_lightning.train", f"ckpt_path={metrics['checkpoint']}", cwd=tmp_path, data_dir=mnist_dir, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dataloader is not resumable" not in result.stderr  # Lightning's warning: ours restores the position
    assert run_dirs(tmp_path) == [run_dir]
    assert_same_run(uninterrupted, final_state(run_dir))


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path, mnist_dir):
    interrupt(tmp_path, mnist_dir, signal.SIGINT)


KILL_WHILE_SAVING = """
import sys, torch
from mnist_lightning.training.checkpoint_io import AtomicCheckpointIO
io, version = AtomicCheckpointIO(), 0
while True:
    version += 1
    io.save_checkpoint({"version": version, "weights": torch.full((4_000_000,), float(version))}, sys.argv[1])
    print(version, flush=True)
"""


def test_kill_during_checkpoint_write_leaves_the_previous_or_the_new_file(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_WHILE_SAVING, str(target)], stdout=subprocess.PIPE, text=True
        )
        proc.stdout.readline()  # one complete save, then kill somewhere inside a later one
        delay = RNG.uniform(0.0, 0.3)
        print(f"FAULT_SEED={SEED}: kill {delay:.3f} s into the saves")
        time.sleep(delay)
        proc.kill()
        proc.communicate()
        state = torch.load(target, weights_only=True)
        assert torch.equal(state["weights"], torch.full((4_000_000,), float(state["version"])))
    assert [p.name for p in target.parent.iterdir() if p.suffix == ".ckpt"] == ["last.ckpt"]


def test_resume_with_another_network_is_refused_before_training(trained, mnist_dir, tmp_path):
    _, run_dir, _ = trained
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    result = run_cli(
        "mnist_lightning.train",
        f"ckpt_path={checkpoint}",
        "model.net.hidden=64",
        "hydra.run.dir=" + str(tmp_path / "run"),
        cwd=tmp_path,
        data_dir=mnist_dir,
        timeout=120,
    )
    assert result.returncode == 2
    assert "model.net" in result.stderr and "hidden: 128 in the checkpoint, 64 now" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_or_foreign_checkpoint_is_refused_in_one_line(tmp_path, mnist_dir):
    from mnist_lightning.errors import UserError
    from mnist_lightning.training.resume import check_resumable

    missing = run_cli(
        "mnist_lightning.train", f"ckpt_path={tmp_path / 'nope.ckpt'}", cwd=tmp_path, data_dir=mnist_dir, timeout=120
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "outputs").exists(), "refused before Hydra made a run folder"
    notes = tmp_path / "notes.txt"
    notes.write_text("every digit counts\n")
    text = run_cli("mnist_lightning.train", f"ckpt_path={notes}", cwd=tmp_path, data_dir=mnist_dir, timeout=120)
    assert text.returncode == 2 and "Traceback" not in text.stderr
    assert "notes.txt: not a resumable mnist_lightning training checkpoint (not a PyTorch checkpoint" in text.stderr
    assert not (tmp_path / "outputs").exists(), "refused before Hydra made a run folder"
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="not a resumable mnist_lightning training checkpoint"):
        check_resumable(foreign, {"arch": "cnn"})
    # a file that is no checkpoint at all: the project's own words, never torch's advice to load it unsafely
    text = tmp_path / "README.md"
    text.write_text("# not a checkpoint\n")
    with pytest.raises(UserError, match="not a PyTorch checkpoint, or one that holds more than plain data") as refused:
        check_resumable(text, {"arch": "cnn"})
    assert "weights_only" not in str(refused.value)
    from mnist_lightning.runs.resolve import resolve_model

    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match=r"empty.ckpt: the file is empty \(an interrupted copy or write\?\)"):
        resolve_model(str(empty), "best", tmp_path / "outputs")


@pytest.mark.parametrize("verb", ["evaluate", "predict", "export"])
def test_every_verb_refuses_an_outputs_root_it_cannot_write_in_one_line(verb, tmp_path, mnist_dir):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outputs folder should be")
    result = run_cli(f"mnist_lightning.{verb}", f"paths.outputs_root={blocker}", cwd=tmp_path, data_dir=mnist_dir)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"Cannot write run folders under {blocker}: {blocker} is not a writable folder" in result.stderr


@pytest.mark.parametrize(("verb", "key"), [("train", "seed"), ("evaluate", "n_bins")])
def test_a_setting_that_cannot_be_resolved_is_one_line_naming_it(verb, key, tmp_path, mnist_dir):
    unset = "${oc.env:MNIST_LIGHTNING_NO_SUCH_VARIABLE}"  # the variable a deployment forgot to set
    result = run_cli(f"mnist_lightning.{verb}", f"{key}={unset}", cwd=tmp_path, data_dir=mnist_dir, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"{key}: " in result.stderr and "MNIST_LIGHTNING_NO_SUCH_VARIABLE' not found" in result.stderr


def test_unwritable_output_folder_is_refused_before_anything_runs(tmp_path, mnist_dir):
    blocker = tmp_path / "outputs"
    blocker.write_text("a file where the outputs folder should be")
    result = run_cli("mnist_lightning.train", cwd=tmp_path, data_dir=mnist_dir, timeout=120)
    assert result.returncode == 2
    assert "is not a writable folder" in result.stderr and "Traceback" not in result.stderr


def test_runs_started_together_get_their_own_folders(tmp_path, mnist_dir):
    tiny = [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "scheduler=none",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
    ]
    procs = [start(tmp_path, mnist_dir, *tiny) for _ in range(2)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    folders = run_dirs(tmp_path)
    assert len(folders) == 2
    assert all(json.loads((d / "metrics.json").read_text())["state"] == "finished" for d in folders)


def test_a_run_folder_in_use_is_never_trained_into_by_a_second_process(tmp_path, mnist_dir):
    proc = start(
        tmp_path,
        mnist_dir,
        *SHORT,
        "trainer.limit_train_batches=2000",
        "trainer.max_epochs=1",
        "callbacks.periodic_checkpoint.every_n_train_steps=5",
    )
    try:
        checkpoint = wait_for_checkpoint(tmp_path, proc)
        run_dir = checkpoint.parent.parent
        holder = json.loads((run_dir / ".train.lock").read_text())
        assert holder["pid"] == proc.pid

        direct = run_cli(
            "mnist_lightning.train", f"ckpt_path={checkpoint}", cwd=tmp_path, data_dir=mnist_dir, timeout=120
        )
        assert direct.returncode == 2 and "Traceback" not in direct.stderr
        assert f"{run_dir} is in use: process {proc.pid}" in direct.stderr
        newest = run_cli("mnist_lightning.train", "ckpt_path=last", cwd=tmp_path, data_dir=mnist_dir, timeout=120)
        assert newest.returncode == 2 and "1 still training" in newest.stderr and "Traceback" not in newest.stderr
        assert proc.poll() is None, "the running training was not disturbed"
        assert not (run_dir / "metrics.json").exists() and not list((run_dir / ".hydra").glob("resume-*"))
        assert run_dirs(tmp_path) == [run_dir]
    finally:
        proc.kill()
        proc.communicate()


def test_resuming_a_run_that_finished_its_schedule_is_refused_and_keeps_its_record(trained, mnist_dir, tmp_path):
    import shutil

    cwd, run_dir, _ = trained
    shutil.copytree(cwd / "outputs", tmp_path / "outputs")  # a copy: other tests read the shared run
    (copy,) = run_dirs(tmp_path)
    before = (copy / "metrics.json").read_bytes(), (copy / "metrics.json").stat().st_mtime_ns
    result = run_cli("mnist_lightning.train", "ckpt_path=last", cwd=tmp_path, data_dir=mnist_dir, timeout=180)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{copy} has already finished its schedule (epoch 2 of trainer.max_epochs=2, step 300)" in result.stderr
    assert "Train longer in a new run" in result.stderr and "Traceback" not in result.stderr
    assert "Trainer.fit" not in result.stderr, "refused before training"
    after = (copy / "metrics.json").read_bytes(), (copy / "metrics.json").stat().st_mtime_ns
    assert after == before, "a refused resume never rewrites the run's record"
    assert json.loads(after[0])["val/acc_best"] is not None
