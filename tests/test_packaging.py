"""A built wheel, installed into a fresh virtual environment, runs without the source tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT, run_dirs

pytestmark = pytest.mark.slow  # builds and installs a wheel, then trains

TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
]


def test_a_wheel_installs_into_a_fresh_venv_and_its_commands_work(tmp_path, mnist_dir):
    source, dist = tmp_path / "source", tmp_path / "dist"  # a copy: building writes build/ beside the sources
    shutil.copytree(
        ROOT,
        source,
        ignore=lambda folder, names: [
            n
            for n in names
            if Path(folder) == ROOT
            and n in (".git", ".venv", "outputs", "data", "build", "dist", ".pytest_cache", ".ruff_cache")
            or n == "__pycache__"
        ],
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("mnist_lightning-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "mnist_lightning/conf/train.yaml",
        "mnist_lightning/conf/callbacks/default.yaml",
        "hydra_plugins/mnist_lightning_optuna/optuna_sweeper.py",
        "mnist_lightning/serving/page/index.html",
        "mnist_lightning/conf/serve.yaml",
    } <= names

    # A fresh venv gets the package from the wheel; its dependencies (gigabytes of torch) are borrowed from this
    # environment through a .pth line, which adds the folder but runs none of its own .pth hooks (the editable
    # install of the source tree stays invisible).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    work = tmp_path / "work"  # not the source tree: nothing can be imported from a checkout
    work.mkdir()
    env = {**os.environ, "MNIST_DATA_DIR": str(mnist_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)

    def run(*command: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), cwd=work, env=env, capture_output=True, text=True, timeout=timeout)

    where = run(str(python), "-c", "import mnist_lightning; print(mnist_lightning.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    train_commands = [[str(venv / "bin" / "mnist-train")], [str(python), "-m", "mnist_lightning.train"]]
    for command in (train_commands[0] + ["--help"], train_commands[1] + ["--help"]):
        helped = run(*command)
        assert helped.returncode == 0, helped.stderr[-3000:]
        assert "== Configuration groups ==" in helped.stdout and "model: bn_cnn, cnn, mlp" in helped.stdout

    trained = run(str(venv / "bin" / "mnist-train"), *TINY)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run_dir,) = run_dirs(work)
    assert json.loads((run_dir / "metrics.json").read_text())["state"] == "finished"
    assert (run_dir / "train.log").is_file()  # the same job name as `python -m mnist_lightning.train`

    resumed = run(str(venv / "bin" / "mnist-train"), "ckpt_path=last")  # resume in place works the same
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run_dirs(work) == [run_dir] and len(json.loads((run_dir / "metrics.json").read_text())["resumes"]) == 1
    summarized = run(str(venv / "bin" / "mnist-summarize"), "outputs")
    assert summarized.returncode == 0 and "finished" in summarized.stdout
