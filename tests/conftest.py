"""Shared fixtures: the real offline MNIST, tiny IDX files written by the tests, composed configs."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_lightning.data import MNIST_FILES, FileSpec

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"


def _real_data_dir() -> Path | None:
    configured = os.environ.get("MNIST_DATA_DIR")
    if configured:
        if not all((Path(configured) / "MNIST" / "raw" / s.name).is_file() for s in MNIST_FILES.values()):
            raise RuntimeError(f"MNIST_DATA_DIR={configured} does not hold MNIST/raw/*-ubyte")
        return Path(configured)
    default = ROOT.parent / "shared" / "datasets"
    return default if (default / "MNIST" / "raw").is_dir() else None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST files (MNIST_DATA_DIR, else ../shared/datasets)."""
    path = _real_data_dir()
    if path is None:
        pytest.skip("real MNIST not found: set MNIST_DATA_DIR to a folder with MNIST/raw/*-ubyte")
    return path


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_mnist(tmp_path) -> tuple[Path, dict[str, FileSpec]]:
    """A 300/100-image dataset in MNIST's IDX layout, with its own sizes and md5 sums."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "tiny" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "train_images": rng.integers(0, 256, (300, 28, 28)), "train_labels": np.arange(300) % 10,
        "test_images": rng.integers(0, 256, (100, 28, 28)), "test_labels": np.arange(100) % 10,
    }
    files = {}
    for key, array in arrays.items():
        path = raw / MNIST_FILES[key].name
        write_idx(path, array)
        files[key] = FileSpec(path.name, path.stat().st_size, hashlib.md5(path.read_bytes()).hexdigest())
    return tmp_path / "tiny", files


def run_cli(module: str, *overrides: str, cwd: Path, data_dir: Path, timeout: int = 600):
    """Run `python -m module overrides...` in `cwd` (its outputs/ lands there)."""
    env = {**os.environ, "MNIST_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# A short real training run (2 epochs of 150 batches, a checkpoint kept for each) that several test modules share.
FAST = ["trainer.max_epochs=2", "trainer.limit_train_batches=150", "trainer.limit_val_batches=2",
        "callbacks.model_checkpoint.save_top_k=-1", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]


def run_dirs(cwd: Path) -> list[Path]:
    """Training run folders under cwd/outputs, oldest first."""
    return sorted(p.parent for p in (cwd / "outputs").glob("*/*/.hydra"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory, mnist_dir):
    """(project folder, run folder, CompletedProcess) of `python -m mnist_lightning.train` on the real data."""
    cwd = tmp_path_factory.mktemp("project")
    result = run_cli("mnist_lightning.train", *FAST, cwd=cwd, data_dir=mnist_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = run_dirs(cwd)
    return cwd, run_dir, result
