"""MLflow tracking and the model registry on a real SQLite store in a temporary project folder."""

from __future__ import annotations

import json
import re
import shutil

import mlflow
import pytest

from helpers import ROOT, run_cli, run_dirs, tiny_run
from mnist_lightning.errors import UserError
from mnist_lightning.runs import lineage, registry

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


@pytest.mark.slow  # trains
def test_a_run_logged_to_mlflow_has_the_config_as_params_and_the_tensorboard_metrics(project):
    _, run_dir, client = project
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = client.get_run(metrics["mlflow"]["run_id"])
    assert run.data.params["model/net/arch"] == "cnn" and run.data.params["data/batch_size"] == "64"
    assert {"val/acc", "val/acc_best", "val/loss", "test/acc", "test/loss"} <= set(run.data.metrics)
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert run.data.tags["run_dir"] == str(run_dir)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))  # TensorBoard still logs beside it


@pytest.mark.slow  # trains, registers and exports
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
    # and the run's metrics.json, so that serve's /model shows the test figures of a model loaded from the registry
    from mnist_lightning.inference.model import LoadedModel

    shared_metrics = json.loads((shared.parent.parent / "metrics.json").read_text())
    served = LoadedModel.load(copied)
    assert served.run_dir is None and served.metrics["test/acc"] == shared_metrics["test/acc"]

    register(project, mnist_dir, "model_ref=registry:mnist-cnn@challenger", "alias=champion", "export=false")
    assert str(client.get_model_version_by_alias("mnist-cnn", "champion").version) == "2"
    assert len(client.search_model_versions("name='mnist-cnn'")) == 2

    with pytest.raises(UserError, match=r"mnist-cnn has no alias 'nope' \(aliases: challenger=v2, champion=v2\)"):
        registry.resolve("registry:mnist-cnn@nope", root)
    with pytest.raises(UserError, match="no registered model 'other'.*registered models: mnist-cnn"):
        registry.resolve("registry:other/1", root)
    with pytest.raises(UserError, match="mnist-cnn has no version 7 \\(versions: 1, 2\\)"):
        registry.resolve("registry:mnist-cnn/7", root)


# Names, aliases and versions from the command line are checked before MLflow is asked: a quote, for one, is taken
# by create_registered_model and then breaks every search filter (name='...'), which left an empty model behind.
BAD_NAMES = {
    "a'b": "'",
    'a"b': '"',
    "a\\": "\\",
    "../../x": "/",
    "a:b": ":",
    "a%b": "%",
    "a@b": "@",
    "a\nb": "\\n",
    "a\x00b": "\\x00",
}


@pytest.mark.parametrize(("name", "shown"), BAD_NAMES.items())
def test_a_name_mlflow_or_its_search_filters_cannot_hold_is_refused_in_one_line(name, shown):
    with pytest.raises(UserError) as refused:
        registry.check_name(name, f"name={name}")
    message = str(refused.value)
    assert f": {shown} is not allowed in a registered model's name" in message and "e.g. mnist-cnn" in message
    assert message.isprintable() and message.startswith("name=" if name.isprintable() else "'name=")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "cannot be blank"),
        ("  ", "cannot be blank"),
        (".", "cannot be '.' or start with '..'"),
        ("..", "cannot be '.' or start with '..'"),
        ("..x", "cannot be '.' or start with '..'"),
        ("x" * 256, "at most 255 bytes (256 here)"),
        ("é" * 128, "at most 255 bytes (256 here)"),
    ],
)
def test_a_blank_a_dotted_or_a_too_long_name_is_refused(name, problem):
    with pytest.raises(UserError, match=rf"^name={name}: .*{re.escape(problem)}"):
        registry.check_name(name, f"name={name}")


@pytest.mark.parametrize("name", ["mnist-cnn", "my model_2.0", "é名", "a..b", "x" * 255])
def test_a_name_mlflow_can_hold_and_search_is_kept(name):
    assert registry.check_name(name, f"name={name}") == name


def test_an_alias_is_checked_as_mlflow_does_and_its_own_aliases_are_not_set():
    for alias in ("champion", "challenger", "my_alias-2", "é"):
        assert registry.check_alias(alias, f"alias={alias}", to_set=True) == alias
    for alias in ("", "a'b", "a b", "a/b", "x" * 256):
        with pytest.raises(UserError, match=rf"^alias={re.escape(alias)}: .*e\.g\. champion"):
            registry.check_alias(alias, f"alias={alias}", to_set=True)
    for alias in ("latest", "Latest", "v2", "V10"):
        with pytest.raises(UserError, match=rf"^alias={alias}: latest and v<number> are MLflow's own aliases"):
            registry.check_alias(alias, f"alias={alias}", to_set=True)
    assert registry.check_alias("latest", "model_ref=registry:m@latest") == "latest"  # the newest version


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("registry:a'b/1", "' is not allowed in a registered model's name"),
        ("registry:../../x/1", "/ is not allowed in a registered model's name"),
        ("registry:a'b@champion", "' is not allowed in a registered model's name"),
        ("registry:a:b@champion", ": is not allowed in a registered model's name"),
        ("registry:mnist-cnn@a'b", "an alias is 1 to 255 letters"),
        ("registry:mnist-cnn@v2", "latest and v<number> are MLflow's own aliases"),
        ("registry:mnist-cnn/²", "a registry reference is registry:NAME@ALIAS"),
    ],
)
def test_a_bad_registry_reference_is_refused_before_mlflow_is_asked(reference, problem, monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "client", lambda _: pytest.fail("MLflow was asked"))
    with pytest.raises(UserError) as refused:
        registry.find_version(reference, tmp_path)
    assert str(refused.value).startswith(f"model_ref={reference}: ") and problem in str(refused.value)


def test_good_registry_references_are_parsed():
    assert registry.parse("registry:mnist-cnn@latest") == ("mnist-cnn", "latest", None)
    assert registry.parse("registry:my model 2.0@champion") == ("my model 2.0", "champion", None)
    assert registry.parse("registry:mnist-cnn/12") == ("mnist-cnn", None, "12")


@pytest.mark.parametrize(("name", "alias"), [("a'b", "champion"), ("../../x", "champion"), ("mnist-cnn", "latest")])
def test_register_refuses_a_bad_name_or_alias_before_mlflow_is_asked(name, alias, monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "client", lambda _: pytest.fail("MLflow was asked"))
    checkpoint = tiny_run(tmp_path / "run", seed=0)
    with pytest.raises(UserError, match="not allowed|MLflow's own aliases"):
        registry.register(checkpoint, name, alias, tmp_path / "outputs", None, {})


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty SQLite store in a temporary folder, where MLFLOW_TRACKING_URI points every command."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.search_registered_models() == []  # its tables made
    return client


@pytest.mark.slow  # a command each
@pytest.mark.parametrize(
    ("verb", "override", "shown"),
    [
        # in Hydra's quotes, as the shell's `'name="a'\''b"'` gives them: unquoted, Hydra's grammar refuses the quote
        ("register", 'name="a\'b"', "name=a'b: ' is not allowed in a registered model's name"),
        ("register", "name=../../x", "name=../../x: / is not allowed in a registered model's name"),
        ("register", "alias=latest", "alias=latest: latest and v<number> are MLflow's own aliases"),
        ("evaluate", 'model_ref="registry:a\'b/1"', "model_ref=registry:a'b/1: ' is not allowed in a registered"),
    ],
)
def test_a_bad_registry_name_on_the_command_line_is_one_line_and_registers_nothing(
    verb, override, shown, store, tmp_path
):
    checkpoint = tiny_run(tmp_path / "run", seed=0)
    # register gets a model (it is not even loaded) and keeps from exporting it
    given = [f"ckpt_path={checkpoint}", "export=false"] if verb == "register" else []
    result = run_cli(f"mnist_lightning.{verb}", override, *given, cwd=tmp_path, data_dir=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = [line for line in result.stderr.splitlines() if shown in line]
    assert "e.g. mnist-cnn" in line or "e.g. champion" in line, line
    assert store.search_registered_models() == []


def test_a_moved_or_mounted_outputs_folder_still_resolves_its_registry(tmp_path, monkeypatch):
    """The store records absolute artifact paths; the container image mounts outputs/ at /app/outputs. A version
    is found in the outputs root it is asked from, and files that are gone are one clear line, no traceback."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    checkpoint = tiny_run(tmp_path / "first" / "outputs" / "run", seed=0)
    registry.register(checkpoint, "mnist-mlp", "champion", tmp_path / "first" / "outputs", None, {})
    sha256 = lineage.sha256sum(checkpoint)
    (tmp_path / "first").rename(tmp_path / "moved")
    outputs = tmp_path / "moved" / "outputs"
    resolved = registry.resolve("registry:mnist-mlp@champion", outputs)
    assert resolved == outputs / "registry" / "mnist-mlp" / "v1" / registry.CHECKPOINT_NAME
    assert lineage.sha256sum(resolved) == sha256

    shutil.rmtree(outputs / "registry")
    shutil.rmtree(outputs / "mlartifacts")
    with pytest.raises(
        UserError, match=r"registry:mnist-mlp@champion: the files of mnist-mlp version 1 could not be copied"
    ):
        registry.resolve("registry:mnist-mlp@champion", outputs)


def test_relocated_reads_file_uris_looks_in_this_outputs_and_leaves_remote_stores_alone(tmp_path):
    outputs = tmp_path / "my project" / "outputs"
    files = outputs / "mlartifacts" / "1" / "abc" / "artifacts" / "model"
    files.mkdir(parents=True)
    assert registry.relocated(files.as_uri(), outputs) == files.as_uri()  # percent-encoded, and there
    assert registry.relocated("/elsewhere/outputs/mlartifacts/1/abc/artifacts/model", outputs) == str(files)
    assert registry.relocated("file:///elsewhere/outputs/mlartifacts/1/abc/artifacts/model", outputs) == str(files)
    assert (
        registry.relocated("/elsewhere/outputs/mlartifacts/2/none", outputs) == "/elsewhere/outputs/mlartifacts/2/none"
    )
    for remote in ("s3://bucket/mlartifacts/1/abc", "models:/mnist-cnn/1", "runs:/abc/model"):
        assert registry.relocated(remote, outputs) == remote
