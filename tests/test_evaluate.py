"""The resolver, safe checkpoint loading, the reports, and `python -m mnist_lightning.evaluate` end to end."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from mnist_lightning import reports, runs
from mnist_lightning.errors import UserError


def fake_run(root: Path, name: str, val_acc: float | None, ckpt: bytes | None = b"weights", state: str = "finished",
             val_samples: int = 5000) -> Path:
    run_dir = root / name
    (run_dir / "checkpoints").mkdir(parents=True)
    if ckpt is not None:
        (run_dir / "checkpoints" / "best.ckpt").write_bytes(ckpt)
    runs.write_metrics(run_dir, {"state": state, "val/acc_best": val_acc, "best_checkpoint": "checkpoints/best.ckpt",
                                 "val_samples": val_samples, "val_split_size": 5000})
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
    (tmp_path / "evaluate_run").mkdir()
    runs.write_metrics(tmp_path / "evaluate_run", {"accuracy": 1.0})  # not a training run
    assert runs.resolve_model(None, "best", tmp_path) == best / "checkpoints" / "best.ckpt"
    assert runs.resolve_model(None, "latest", tmp_path) == newest / "checkpoints" / "best.ckpt"
    explicit = good / "checkpoints" / "best.ckpt"
    assert runs.resolve_model(str(explicit), "best", tmp_path) == explicit


def test_best_needs_a_run_validated_on_the_whole_split(tmp_path):
    debug = fake_run(tmp_path, "debug", 1.0, val_samples=128)
    with pytest.raises(UserError, match="model_ref=best: none of the 1 runs .* finished with validation on the whole "
                                        "split .* Use model_ref=latest"):
        runs.resolve_model(None, "best", tmp_path)
    assert runs.resolve_model(None, "latest", tmp_path) == debug / "checkpoints" / "best.ckpt"


def test_resolver_errors(tmp_path):
    with pytest.raises(UserError, match="No trained model under .*run `make train`"):
        runs.resolve_model(None, "best", tmp_path)
    with pytest.raises(UserError, match="ckpt_path=.*no such checkpoint"):
        runs.resolve_model(str(tmp_path / "x.ckpt"), "best", tmp_path)
    with pytest.raises(UserError, match="model_ref=newest"):
        runs.resolve_model(None, "newest", tmp_path)


def test_bad_checkpoints_are_named_and_never_unpickled(trained, tmp_path):
    _, run_dir, _ = trained
    good = run_dir / runs.read_metrics(run_dir)["best_checkpoint"]
    assert runs.load_network(good)(torch.zeros(1, 1, 28, 28)).shape == (1, 10)

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:5000])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(4096))
    other = tmp_path / "other_network.ckpt"
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["hyper_parameters"]["net"]["conv1_channels"] = 16
    torch.save(checkpoint, other)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"hyper_parameters": {"net": {"arch": "cnn"}}, "state_dict": {}, "payload": Path("x")}, pickled)
    for path in (truncated, garbage, other, pickled):
        with pytest.raises(UserError, match=f"{path.name}: not a loadable mnist_lightning checkpoint"):
            runs.load_network(path)


def test_metrics_and_report_on_known_predictions():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 0])
    logits = torch.nn.functional.one_hot(preds, 3).float() * 5
    metrics = reports.classification_metrics(logits, labels, n_bins=10)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["per_class"]["1"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert metrics["support"] == 6 and 0 <= metrics["ece"] <= 1
    report = reports.classification_report(metrics)
    assert "precision" in report and "macro avg" in report and "weighted avg" in report
    assert report.splitlines()[2].split() == ["0", "0.5000", "0.5000", "0.5000", "2"]


@pytest.fixture(scope="module")
def evaluated(trained, mnist_dir):
    cwd, _, _ = trained
    result = run_cli("mnist_lightning.evaluate", cwd=cwd, data_dir=mnist_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = sorted((cwd / "outputs" / "evaluate").glob("*/*"))
    return run_dir, result


def test_evaluate_writes_every_report(evaluated):
    run_dir, result = evaluated
    for name in ("metrics.json", "classification_report.txt", "confusion_matrix.png",
                 "confusion_matrix_normalized.png", "misclassified.png", "reliability.png"):
        assert (run_dir / name).stat().st_size > 0, name
    assert "test accuracy" in result.stderr + result.stdout


def test_evaluate_metrics_match_a_direct_recomputation(evaluated, mnist_dir):
    from mnist_lightning.data import load_split, normalize

    run_dir, _ = evaluated
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sum(c["support"] for c in metrics["per_class"].values()) == 10_000
    assert metrics["checkpoint_sha256"] == runs.sha256sum(metrics["checkpoint"])
    assert metrics["data_md5"]["t10k-images-idx3-ubyte"] == "2646ac647ad5339dbf082846283269ea"
    for key in ("loss", "ece", "macro", "weighted"):
        assert key in metrics
    images, labels = load_split(mnist_dir, train=False)
    network = runs.load_network(metrics["checkpoint"])
    with torch.no_grad():
        accuracy = (network(normalize(images)).argmax(1) == labels).float().mean().item()
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_evaluate_figures_are_in_tensorboard(evaluated):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = evaluated
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    expected = {"evaluate/confusion_matrix", "evaluate/misclassified", "evaluate/reliability"}
    assert expected <= set(events.Tags()["images"])


def test_evaluate_without_any_model_says_to_train(tmp_path, mnist_dir):
    result = run_cli("mnist_lightning.evaluate", cwd=tmp_path, data_dir=mnist_dir, timeout=120)
    assert result.returncode == 2
    assert "run `make train` first" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_with_an_unknown_device_says_so_in_one_line(trained, mnist_dir):
    cwd, _, _ = trained
    result = run_cli("mnist_lightning.evaluate", "device=foo", cwd=cwd, data_dir=mnist_dir, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "device=foo: not a device name; use auto, cpu, cuda or cuda:N" in result.stderr


def test_ckpt_path_last_is_the_newest_single_run_nobody_trains_in(tmp_path):
    def run(name: str, mode: str = "RUN") -> Path:
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / ".hydra").mkdir()
        (tmp_path / name / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  mode: {mode}\n")
        (tmp_path / name / "checkpoints" / "last.ckpt").write_bytes(b"x")
        time.sleep(0.01)
        return tmp_path / name / "checkpoints" / "last.ckpt"

    run("2026-01-01/10-00-00-000000")
    wanted = run("2026-01-01/08-00-00-000000")
    run("multirun/2026-01-02/09-00-00-000000/3", mode="MULTIRUN")  # a sweep job: resumed by its own path
    busy = run("2026-01-03/09-00-00-000000")
    (busy.parent.parent / runs.LOCK_FILE).write_text(json.dumps(runs.this_process()))  # a live process trains there
    assert runs.resume_checkpoint("last", tmp_path) == wanted
    assert runs.resume_checkpoint(None, tmp_path) is None
    (wanted.parent.parent / runs.LOCK_FILE).write_text(json.dumps({**runs.this_process(), "pid": 2**22 + 1}))
    assert runs.resume_checkpoint("last", tmp_path) == wanted, "a stale lock does not hide a run"
