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


def copy_of_the_source(tmp_path: Path) -> Path:
    """The checkout without its outputs and caches (building writes build/ and *.egg-info beside the sources)."""
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=lambda folder, names: [
            n
            for n in names
            if Path(folder) == ROOT
            and n in (".git", ".venv", "outputs", "data", "build", "dist", ".pytest_cache", ".ruff_cache")
            or n == "__pycache__"
            or n.endswith(".egg-info")
        ],
    )
    return source


def fresh_venv(tmp_path: Path) -> Path:
    """A new venv's python. Its dependencies (gigabytes of torch) are borrowed from this environment through a .pth
    line, which adds the folder but runs none of its own .pth hooks (the editable install of the checkout stays
    invisible)."""
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
    return python


def runner(work: Path, mnist_dir: Path):
    """Run a command in `work`, a folder outside the source tree: nothing can be imported from a checkout."""
    work.mkdir()
    env = {**os.environ, "MNIST_DATA_DIR": str(mnist_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)

    def run(*command: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), cwd=work, env=env, capture_output=True, text=True, timeout=timeout)

    return run


def test_a_wheel_installs_into_a_fresh_venv_and_its_commands_work(tmp_path, mnist_dir):
    source, dist = copy_of_the_source(tmp_path), tmp_path / "dist"
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

    python = fresh_venv(tmp_path)
    venv = python.parent.parent
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    work = tmp_path / "work"
    run = runner(work, mnist_dir)
    where = run(str(python), "-c", "import mnist_lightning; print(mnist_lightning.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    train_commands = [[str(venv / "bin" / "mnist-train")], [str(python), "-m", "mnist_lightning.train"]]
    for command in (train_commands[0] + ["--help"], train_commands[1] + ["--help"]):
        helped = run(*command)
        assert helped.returncode == 0, helped.stderr[-3000:]
        assert "== Configuration groups ==" in helped.stdout and "model: bn_cnn, cnn, mlp" in helped.stdout

    served = run(str(venv / "bin" / "mnist-serve"), "--cfg", "job", "port=8123")
    assert served.returncode == 0 and "port: 8123" in served.stdout, served.stderr[-3000:]
    trained = run(str(venv / "bin" / "mnist-train"), *TINY)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run_dir,) = run_dirs(work)
    assert json.loads((run_dir / "metrics.json").read_text())["state"] == "finished"
    assert (run_dir / "train.log").is_file()  # the same job name as `python -m mnist_lightning.train`

    record = (run_dir / "metrics.json").read_text()
    refused = run(str(venv / "bin" / "mnist-train"), "ckpt_path=last")  # found in place: the run has finished
    assert refused.returncode == 2 and f"{run_dir} has already finished its schedule" in refused.stderr
    assert run_dirs(work) == [run_dir] and (run_dir / "metrics.json").read_text() == record
    summarized = run(str(venv / "bin" / "mnist-summarize"), "outputs")
    assert summarized.returncode == 0 and "finished" in summarized.stdout


def test_an_editable_install_reads_the_checkouts_top_level_conf(tmp_path, mnist_dir):
    """`pip install -e .` maps the top-level conf/ to mnist_lightning.conf: train, serve and summarize compose from
    the checkout's files, so an edit there shows at once."""
    source = copy_of_the_source(tmp_path)
    python = fresh_venv(tmp_path)
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-build-isolation", "-q"]
        + ["--no-index", "-e", str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    yaml = source / "conf" / "train.yaml"
    yaml.write_text(yaml.read_text().replace("seed: 42\n", "seed: 4242\n"))
    run = runner(tmp_path / "work", mnist_dir)
    where = run(str(python), "-c", "import mnist_lightning.conf as c; print(c.__file__)")
    assert where.stdout.strip() == str(source / "conf" / "__init__.py"), where.stdout + where.stderr
    composed = run(str(python), "-m", "mnist_lightning.train", "--cfg", "job", "trainer.max_epochs=3")
    assert composed.returncode == 0, composed.stderr[-3000:]
    assert "seed: 4242" in composed.stdout and "max_epochs: 3" in composed.stdout
    served = run(str(python), "-m", "mnist_lightning.serve", "--cfg", "job", "port=8123")
    assert served.returncode == 0 and "port: 8123" in served.stdout, served.stderr[-3000:]
    (tmp_path / "work" / "outputs").mkdir()
    summarized = run(str(python), "-m", "mnist_lightning.summarize", "outputs")
    assert summarized.returncode == 2 and "no training runs under outputs" in summarized.stderr, summarized.stderr
