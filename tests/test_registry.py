"""MLflow tracking and the model registry on a real SQLite store in a temporary project folder."""

from __future__ import annotations

import json

import mlflow
import pytest

from helpers import ROOT, run_cli, run_dirs
from mnist_lightning.errors import UserError
from mnist_lightning.runs import lineage, registry

pytestmark = pytest.mark.slow  # trains, registers and exports

TWO_EPOCHS = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=20",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
    "callbacks.model_checkpoint.save_top_k=-1",
    "logger=[tensorboard,mlflow]",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory, mnist_dir):
    cwd = tmp_path_factory.mktemp("registry")
    result = run_cli("mnist_lightning.train", *TWO_EPOCHS, cwd=cwd, data_dir=mnist_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(cwd)
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}")
    return cwd, run_dir, client


def register(project, mnist_dir, *overrides):
    cwd, _, _ = project
    result = run_cli("mnist_lightning.register", *overrides, cwd=cwd, data_dir=mnist_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_run_logged_to_mlflow_has_the_config_as_params_and_the_tensorboard_metrics(project):
    _, run_dir, client = project
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = client.get_run(metrics["mlflow"]["run_id"])
    assert run.data.params["model/net/arch"] == "cnn" and run.data.params["data/batch_size"] == "64"
    assert {"val/acc", "val/acc_best", "val/loss", "test/acc", "test/loss"} <= set(run.data.metrics)
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert run.data.tags["run_dir"] == str(run_dir)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))  # TensorBoard still logs beside it


def test_register_files_a_version_once_sets_aliases_and_promotes_a_challenger(project, exported, mnist_dir):
    cwd, run_dir, client = project
    root = cwd / "outputs"
    # the shared trained model, already exported: its export is filed with it
    _, shared, _, _ = exported
    register(project, mnist_dir, f"ckpt_path={shared}", f"paths.outputs_root={root}")
    again = register(project, mnist_dir, f"ckpt_path={shared}", f"paths.outputs_root={root}", "export=false")
    assert "already registered as version 1" in again.stderr
    assert [str(v.version) for v in client.search_model_versions("name='mnist-cnn'")] == ["1"]
    champion = client.get_model_version_by_alias("mnist-cnn", "champion")
    assert str(champion.version) == "1" and champion.tags["metric.test/acc"]
    assert json.loads(champion.tags["data_md5"])["t10k-labels-idx1-ubyte"] == "27ae3e4e09519cfbb04c329615203637"
    assert (
        "model:" in champion.tags["config"]
        and champion.tags["model_version"] == champion.tags["checkpoint_sha256"][:12]
    )

    # this project's own run, logged to MLflow: its version is filed with that run
    best = next((run_dir / "checkpoints").glob("epoch_01-*.ckpt"))
    register(project, mnist_dir, f"ckpt_path={best}", "alias=challenger", "export=false")
    challenger = client.get_model_version_by_alias("mnist-cnn", "challenger")
    assert str(challenger.version) == "2"
    assert challenger.run_id == json.loads((run_dir / "metrics.json").read_text())["mlflow"]["run_id"]

    out = cwd / "preds.jsonl"
    predicted = run_cli(
        "mnist_lightning.predict",
        f"image={ROOT / 'examples' / '1_paper.jpg'}",
        "model_ref=registry:mnist-cnn@challenger",
        f"predictions_file={out}",
        "visualize=false",
        cwd=cwd,
        data_dir=mnist_dir,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "outputs/registry/mnist-cnn/v2/checkpoint.ckpt" in predicted.stdout

    # a version by number, copied with its export (and the drift reference in model.json) beside the weights
    copied = registry.resolve("registry:mnist-cnn/1", root)
    assert lineage.sha256sum(copied) == lineage.sha256sum(shared)
    assert sorted(p.name for p in (copied.parent / "export").iterdir()) == ["model.json", "model.onnx", "model.pt2"]
    assert "reference" in json.loads((copied.parent / "export" / "model.json").read_text())

    register(project, mnist_dir, "model_ref=registry:mnist-cnn@challenger", "alias=champion", "export=false")
    assert str(client.get_model_version_by_alias("mnist-cnn", "champion").version) == "2"
    assert len(client.search_model_versions("name='mnist-cnn'")) == 2

    with pytest.raises(UserError, match=r"mnist-cnn has no alias 'nope' \(aliases: challenger=v2, champion=v2\)"):
        registry.resolve("registry:mnist-cnn@nope", root)
    with pytest.raises(UserError, match="no registered model 'other'.*registered models: mnist-cnn"):
        registry.resolve("registry:other/1", root)
    with pytest.raises(UserError, match="mnist-cnn has no version 7 \\(versions: 1, 2\\)"):
        registry.resolve("registry:mnist-cnn/7", root)
