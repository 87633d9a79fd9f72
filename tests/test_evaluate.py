"""The resolver, safe checkpoint loading, the reports, and `python -m mnist_lightning.evaluate` end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from helpers import run_cli
from mnist_lightning.artifacts import reports
from mnist_lightning.errors import UserError
from mnist_lightning.models.checkpoint import load_network
from mnist_lightning.runs import layout, lineage


@pytest.mark.slow
def test_bad_checkpoints_are_named_and_never_unpickled(trained, tmp_path):
    _, run_dir, _ = trained
    good = run_dir / layout.read_metrics(run_dir)["best_checkpoint"]
    assert load_network(good)(torch.zeros(1, 1, 28, 28)).shape == (1, 10)

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
            load_network(path)


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


@pytest.mark.slow
def test_evaluate_writes_every_report(evaluated):
    run_dir, result = evaluated
    for name in (
        "metrics.json",
        "classification_report.txt",
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "misclassified.png",
        "reliability.png",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    assert "test accuracy" in result.stderr + result.stdout


@pytest.mark.slow
def test_evaluate_metrics_match_a_direct_recomputation(evaluated, mnist_dir):
    from mnist_lightning.data.files import load_split
    from mnist_lightning.data.transforms import normalize

    run_dir, _ = evaluated
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sum(c["support"] for c in metrics["per_class"].values()) == 10_000
    assert metrics["checkpoint_sha256"] == lineage.sha256sum(metrics["checkpoint"])
    assert metrics["data_md5"]["t10k-images-idx3-ubyte"] == "2646ac647ad5339dbf082846283269ea"
    for key in ("loss", "ece", "macro", "weighted"):
        assert key in metrics
    images, labels = load_split(mnist_dir, train=False)
    network = load_network(metrics["checkpoint"])
    with torch.no_grad():
        accuracy = (network(normalize(images)).argmax(1) == labels).float().mean().item()
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.slow
def test_evaluate_figures_are_in_tensorboard(evaluated):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = evaluated
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    expected = {"evaluate/confusion_matrix", "evaluate/misclassified", "evaluate/reliability"}
    assert expected <= set(events.Tags()["images"])


@pytest.mark.slow
def test_evaluate_without_any_model_says_to_train(tmp_path, mnist_dir):
    result = run_cli("mnist_lightning.evaluate", cwd=tmp_path, data_dir=mnist_dir, timeout=120)
    assert result.returncode == 2
    assert "run `make train` first" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_evaluate_with_an_unknown_device_says_so_in_one_line(trained, mnist_dir):
    cwd, _, _ = trained
    result = run_cli("mnist_lightning.evaluate", "device=foo", cwd=cwd, data_dir=mnist_dir, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "device=foo: not a device name; use auto, cpu, cuda or cuda:N" in result.stderr
