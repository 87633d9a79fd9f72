"""Run folders without training: atomic writes, the run lock, and the resolver on folders the tests lay out."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
import torch

from mnist_lightning.errors import UserError
from mnist_lightning.runs import atomic, layout, lock
from mnist_lightning.runs.resolve import resolve_model, resume_checkpoint
from mnist_lightning.training.checkpoint_io import AtomicCheckpointIO


def fake_run(
    root: Path,
    name: str,
    val_acc: float | None,
    ckpt: bytes | None = b"weights",
    state: str = "finished",
    val_samples: int = 5000,
) -> Path:
    run_dir = root / name
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / ".hydra").mkdir()
    (run_dir / "train.log").write_text("")
    if ckpt is not None:
        (run_dir / "checkpoints" / "best.ckpt").write_bytes(ckpt)
    layout.write_metrics(
        run_dir,
        {
            "state": state,
            "val/acc_best": val_acc,
            "best_checkpoint": "checkpoints/best.ckpt",
            "val_samples": val_samples,
            "val_split_size": 5000,
        },
    )
    time.sleep(0.01)  # distinct modification times: find_runs sorts by them
    return run_dir


def test_resolver_picks_best_or_latest_and_skips_unusable_runs(tmp_path):
    good = fake_run(tmp_path, "a", 0.97)
    best = fake_run(tmp_path, "b", 0.99)
    fake_run(tmp_path, "c", 0.999, ckpt=None)  # its checkpoint is gone
    fake_run(tmp_path, "d", 0.9999, ckpt=b"")  # an empty file
    fake_run(tmp_path, "debug", 1.0, val_samples=128)  # validated on two batches: not comparable
    fake_run(tmp_path, "killed", 0.995, state="interrupted")
    newest = fake_run(tmp_path, "e", 0.98)
    (tmp_path / "evaluate_run" / ".hydra").mkdir(parents=True)
    (tmp_path / "evaluate_run" / "evaluate.log").write_text("")
    layout.write_metrics(tmp_path / "evaluate_run", {"accuracy": 1.0, "best_checkpoint": "x"})  # not a training run
    assert resolve_model(None, "best", tmp_path) == best / "checkpoints" / "best.ckpt"
    assert resolve_model(None, "latest", tmp_path) == newest / "checkpoints" / "best.ckpt"
    explicit = good / "checkpoints" / "best.ckpt"
    assert resolve_model(str(explicit), "best", tmp_path) == explicit


def test_best_needs_a_run_validated_on_the_whole_split(tmp_path):
    debug = fake_run(tmp_path, "debug", 1.0, val_samples=128)
    with pytest.raises(
        UserError,
        match="model_ref=best: none of the 1 runs .* finished with validation on the whole "
        "split .* Use model_ref=latest",
    ):
        resolve_model(None, "best", tmp_path)
    assert resolve_model(None, "latest", tmp_path) == debug / "checkpoints" / "best.ckpt"


def test_resolver_errors(tmp_path):
    with pytest.raises(UserError, match="No trained model under .*run `make train`"):
        resolve_model(None, "best", tmp_path)
    with pytest.raises(UserError, match="ckpt_path=.*no such checkpoint"):
        resolve_model(str(tmp_path / "x.ckpt"), "best", tmp_path)
    with pytest.raises(UserError, match="model_ref=newest"):
        resolve_model(None, "newest", tmp_path)


def test_ckpt_path_last_is_the_newest_single_run_nobody_trains_in(tmp_path):
    def run(name: str, mode: str = "RUN") -> Path:
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / ".hydra").mkdir()
        (tmp_path / name / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  mode: {mode}\n")
        (tmp_path / name / "train.log").write_text("")
        (tmp_path / name / "checkpoints" / "last.ckpt").write_bytes(b"x")
        time.sleep(0.01)
        return tmp_path / name / "checkpoints" / "last.ckpt"

    run("2026-01-01/10-00-00-000000")
    wanted = run("2026-01-01/08-00-00-000000")
    run("multirun/2026-01-02/09-00-00-000000/3", mode="MULTIRUN")  # a sweep job: resumed by its own path
    busy = run("2026-01-03/09-00-00-000000")
    (busy.parent.parent / lock.LOCK_FILE).write_text(json.dumps(lock.this_process()))  # a live process trains there
    assert resume_checkpoint("last", tmp_path) == wanted
    assert resume_checkpoint(None, tmp_path) is None
    (wanted.parent.parent / lock.LOCK_FILE).write_text(json.dumps({**lock.this_process(), "pid": 2**22 + 1}))
    assert resume_checkpoint("last", tmp_path) == wanted, "a stale lock does not hide a run"


def test_atomic_save_that_fails_keeps_the_old_file(tmp_path):

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    target = tmp_path / "best.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"version": 1}, target)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        io.save_checkpoint({"version": 2, "bad": Unpicklable()}, target)
    assert torch.load(target, weights_only=True) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]  # no temporary file left behind


def test_resolver_skips_temporary_files_of_an_interrupted_save(tmp_path):

    run_dir = tmp_path / "outputs" / "2026-01-01" / "00-00-00-000000-1"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / ".hydra").mkdir()
    (run_dir / "train.log").write_text("")
    (run_dir / "checkpoints" / ".epoch_01.ckpt.x1y2.tmp").write_bytes(b"partial")
    layout.write_metrics(run_dir, {"state": "interrupted", "best_checkpoint": "checkpoints/.epoch_01.ckpt.x1y2.tmp"})
    with pytest.raises(UserError, match="No trained model"):
        resolve_model(None, "best", tmp_path / "outputs")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_get_the_permissions_of_the_umask(tmp_path, umask):

    previous = os.umask(umask)
    try:
        layout.write_metrics(tmp_path, {"state": "finished"})
        AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "checkpoints" / "last.ckpt")
        atomic.write_text(tmp_path / "report.txt", "text")
    finally:
        os.umask(previous)
    for path in (tmp_path / "metrics.json", tmp_path / "checkpoints" / "last.ckpt", tmp_path / "report.txt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_a_lock_refuses_a_second_holder_and_is_gone_after_release(tmp_path):
    held = lock.RunLock(tmp_path).acquire()
    assert lock.lock_holder(tmp_path)["pid"] == os.getpid()
    with pytest.raises(lock.RunLocked, match=f"{tmp_path} is in use: process {os.getpid()}"):
        lock.RunLock(tmp_path).acquire()
    held.release()
    assert lock.lock_holder(tmp_path) is None and list(tmp_path.iterdir()) == []


def test_a_lock_left_by_a_dead_process_or_a_reused_pid_is_taken_over(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    for stale in (
        {**lock.this_process(), "pid": gone.pid},  # that process has exited
        {**lock.this_process(), "started": "1"},
    ):  # this pid now belongs to another process
        (tmp_path / lock.LOCK_FILE).write_text(json.dumps(stale))
        assert lock.lock_holder(tmp_path) is None
        with lock.RunLock(tmp_path):
            assert json.loads((tmp_path / lock.LOCK_FILE).read_text()) == lock.this_process()
        assert not (tmp_path / lock.LOCK_FILE).exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no file of the take-over is left behind


def finished_run(tmp_path: Path, state: str = "finished", epochs: int = 2, step: int = 300) -> Path:
    """A run folder whose record says `state` after `epochs` epochs and `step` steps, with its last.ckpt."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    layout.write_metrics(run, {"state": state, "epochs": epochs, "global_step": step})
    checkpoint = run / "checkpoints" / "last.ckpt"
    net = {"arch": "mlp", "hidden": [8]}
    torch.save({"hyper_parameters": {"net": net}, "global_step": step, "loops": {}, "optimizer_states": []}, checkpoint)
    return checkpoint


@pytest.mark.parametrize(
    ("state", "max_epochs", "max_steps", "refused"),
    [
        ("finished", 2, -1, "(epoch 2 of trainer.max_epochs=2, step 300)"),
        ("pruned", 1, -1, "(epoch 2 of trainer.max_epochs=1, step 300)"),
        ("finished", None, 300, "(step 300 of trainer.max_steps=300)"),
        ("finished", 3, -1, None),  # a longer schedule trains on
        ("finished", -1, -1, None),  # no limit at all
        ("finished", None, -1, None),  # Lightning's default: 1000 epochs
        ("interrupted", 2, -1, None),  # stopped before its record was written: resuming tests and records it
    ],
)
def test_a_resume_that_would_train_nothing_after_a_finished_record_is_refused(
    tmp_path, state, max_epochs, max_steps, refused
):
    from mnist_lightning.training.resume import check_resumable

    checkpoint = finished_run(tmp_path, state)
    if refused is None:
        check_resumable(checkpoint, {"arch": "mlp", "hidden": [8]}, max_epochs, max_steps)
        return
    with pytest.raises(UserError, match="has already finished its schedule") as error:
        check_resumable(checkpoint, {"arch": "mlp", "hidden": [8]}, max_epochs, max_steps)
    assert refused in str(error.value) and str(checkpoint.parent.parent) in str(error.value)


def test_a_refused_resume_keeps_a_finished_or_pruned_record(tmp_path):
    from mnist_lightning.runs import record

    for state in ("finished", "pruned", "interrupted"):
        run = finished_run(tmp_path / state, state).parent.parent
        assert record.failed(run, UserError("refused"), resuming=True) is None
    assert record.failed(tmp_path / "nothing", UserError("x"), resuming=True) == {
        "state": "failed",
        "error": "UserError: x",
    }


def test_a_file_named_like_a_reference_is_not_taken_for_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "best").write_text("not a checkpoint")
    with pytest.raises(UserError, match="No trained model under"):
        resolve_model(None, "best", tmp_path / "outputs")
    checkpoint = finished_run(tmp_path)
    assert resolve_model(None, str(checkpoint), tmp_path / "outputs") == checkpoint  # ab.candidate=FILE
