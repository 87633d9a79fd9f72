"""The DVC pipeline (dvc.yaml) in a copy of the repository: `dvc exp run -S` trains with the value given, `dvc repro`
with nothing changed runs nothing, a changed parameter reruns train and the stages after it but not the data
check, and `dvc exp show` lists both experiments with their metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT
from mnist_lightning.data.files import MNIST_FILES, verify_files

pytestmark = pytest.mark.slow  # two experiments: train, evaluate and export twice

TINY = [
    "model=mlp",  # a config group through -S too; the perceptron also keeps evaluate and export short
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.enable_progress_bar=false",
    "logger=none",
]
OUTS = ("outputs/dvc/data.json", "outputs/dvc/train/metrics.json", "outputs/dvc/evaluate/metrics.json")


@pytest.fixture
def repo(tmp_path, mnist_dir):
    """A copy of the project's files (git's view of the checkout), a git repository with DVC initialised and its
    Hydra composition on conf/pipeline.yaml; (folder, run(command...))."""
    dvc = Path(sys.executable).parent / "dvc"
    assert dvc.is_file(), "dvc is not installed: pip install -e '.[dvc]' (make install installs it)"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    folder = tmp_path / "repo"
    for name in filter(None, (f.decode() for f in files)):
        if (ROOT / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    raw = folder / "data" / "MNIST" / "raw"  # the pipeline's data is the checkout's, as after `make data`
    raw.mkdir(parents=True)
    for spec in MNIST_FILES.values():
        shutil.copy2(mnist_dir / "MNIST" / "raw" / spec.name, raw / spec.name)
    env = {
        **{k: v for k, v in os.environ.items() if k != "MNIST_DATA_DIR"},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # the stages' `python`
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.org",
        "DVC_NO_ANALYTICS": "1",
    }

    def run(*command: str) -> str:
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout + result.stderr

    run("git", "init", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "the project")
    for command in (["init", "-q"], ["config", "hydra.enabled", "true"], ["config", "hydra.config_name", "pipeline"]):
        run(str(dvc), *command)
    run("git", "add", "-A")
    run("git", "commit", "-qm", "dvc init")
    return folder, lambda *args: run(str(dvc), *args)


def stamps(folder: Path) -> dict[str, int]:
    return {name: (folder / name).stat().st_mtime_ns for name in OUTS}


def trained_lr(folder: Path) -> float:
    config = yaml.safe_load((folder / "outputs/dvc/train/.hydra/config.yaml").read_text())
    return config["model"]["optimizer"]["lr"]


def experiments(shown: list[dict]) -> dict[str, dict]:
    """`dvc exp show --json` -> {experiment name: its data (params and metrics)}."""
    found = {}
    for row in shown:
        for experiment in row.get("experiments") or []:
            for rev in experiment["revs"]:
                found[rev["name"]] = rev["data"]
    return found


def test_experiments_train_with_their_parameters_and_rerun_only_what_changed(repo):
    folder, dvc = repo
    overrides = [item for override in TINY for item in ("-S", override)]
    dvc("exp", "run", "-n", "lr-2e-3", "-S", "model.optimizer.lr=0.002", *overrides)
    assert trained_lr(folder) == 0.002, "the train stage read the composed params.yaml"
    first = stamps(folder)

    output = dvc("repro")
    assert "Data and pipelines are up to date" in output and "Running stage" not in output
    assert stamps(folder) == first

    output = dvc("exp", "run", "-n", "lr-3e-3", "-S", "model.optimizer.lr=0.003", *overrides)
    assert trained_lr(folder) == 0.003
    assert "Stage 'data' didn't change, skipping" in output
    assert all(f"Running stage '{stage}'" in output for stage in ("train", "evaluate", "export"))
    second = stamps(folder)
    assert second["outputs/dvc/data.json"] == first["outputs/dvc/data.json"]
    assert all(second[name] != first[name] for name in OUTS[1:])
    assert (folder / "outputs/dvc/export/model.onnx").is_file()
    assert json.loads((folder / "outputs/dvc/export/model.json").read_text())["network"]["name"] == "mlp"

    shown = experiments(json.loads(dvc("exp", "show", "--json")))
    assert {"lr-2e-3", "lr-3e-3"} <= set(shown)
    for name, lr in (("lr-2e-3", 0.002), ("lr-3e-3", 0.003)):
        data = shown[name]
        assert data["params"]["params.yaml"]["data"]["model"]["optimizer"]["lr"] == lr
        evaluated = data["metrics"]["outputs/dvc/evaluate/metrics.json"]["data"]
        assert 0 <= evaluated["accuracy"] <= 1 and evaluated["support"] == 10000


def test_the_mnist_files_tracked_by_dvc_come_back_from_a_team_remote(repo, tmp_path):
    folder, dvc = repo
    raw = folder / "data" / "MNIST" / "raw"
    dvc("add", "data/MNIST/raw")
    assert (folder / "data/MNIST/raw.dvc").is_file()
    dvc("remote", "add", "-d", "team", str(tmp_path / "team-remote"))  # a folder every teammate can reach
    dvc("push", "data/MNIST/raw.dvc")

    shutil.rmtree(raw)
    shutil.rmtree(folder / ".dvc" / "cache")
    dvc("pull", "data/MNIST/raw.dvc")  # the data alone: the pipeline's outputs come from dvc repro
    assert sorted(verify_files(folder / "data")) == sorted(spec.name for spec in MNIST_FILES.values())
