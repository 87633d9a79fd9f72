"""`python -m mnist_lightning.retrain`'s refusals, on a prediction log written here from MNIST test digits: too few
labelled answers (the count is named), and a result that loses too much MNIST accuracy (trained, measured, kept
in its run folder, not registered). tests/test_loop.py runs the whole loop, where the result is registered."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from helpers import run_cli
from mnist_lightning.data.files import load_split
from mnist_lightning.store.log import Answer, PredictionLog

pytestmark = pytest.mark.slow  # the command runs as a subprocess, and trains
QUICK = ("trainer.limit_train_batches=5", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false")


@pytest.fixture
def project(tmp_path, mnist_dir, trained):
    """A project whose prediction log holds 240 labelled answers (MNIST test digits), and the champion's file."""
    _, run_dir, _ = trained
    images, labels = load_split(mnist_dir, train=False)
    log = PredictionLog(f"sqlite:///{tmp_path}/outputs/serving.db")
    logged = [
        Answer(uuid.uuid4().hex, "0123456789ab", "main", 0, 0.9, images[i].numpy() / 255.0, None) for i in range(240)
    ]
    log.record(logged)
    for i, answer in enumerate(logged):
        log.add_feedback(answer.request_id, int(labels[i]))
    log.close()
    return tmp_path, next((run_dir / "checkpoints").glob("epoch_01-*.ckpt"))


def test_too_few_labelled_answers_are_refused_with_the_count(project, mnist_dir):
    cwd, champion = project
    result = run_cli(
        "mnist_lightning.retrain", f"model_ref={champion}", "retrain.min_feedback=1000", cwd=cwd, data_dir=mnist_dir
    )
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = [text for text in result.stderr.splitlines() if "retrain needs" in text]
    assert "retrain.min_feedback=1000 labelled answers with their images" in line and "holds 240" in line
    assert "Traceback" not in result.stderr and not (cwd / "outputs" / "datasets").exists()


def test_a_result_that_loses_mnist_accuracy_is_kept_but_not_registered(project, mnist_dir):
    cwd, champion = project
    # a negative limit asks the result to gain a point on MNIST: five batches cannot, so it is refused
    result = run_cli(
        "mnist_lightning.retrain",
        f"model_ref={champion}",
        "retrain.max_mnist_drop=-1",
        *QUICK,
        cwd=cwd,
        data_dir=mnist_dir,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = [text for text in result.stderr.splitlines() if "not registered:" in text]
    assert "over retrain.max_mnist_drop=-1" in line and "the run is in" in line
    (metrics_path,) = [p for p in cwd.glob("outputs/*/*/metrics.json") if "comparison" in p.read_text()]
    metrics = json.loads(metrics_path.read_text())
    assert metrics["registered"] is None and metrics["state"] == "finished"
    assert metrics["feedback_dataset"]["counts"]["train"] + metrics["feedback_dataset"]["counts"]["holdout"] == 240
    assert set(metrics["comparison"]) == {"parent", "retrained"}
    assert np.isfinite(metrics["mnist_drop_points"]) and not (cwd / "outputs" / "mlflow.db").exists()
