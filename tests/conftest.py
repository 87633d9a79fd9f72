"""Shared fixtures: the real offline MNIST, tiny IDX files written by the tests, composed configs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from helpers import FAST, NO_DATA, postgres_server, real_data_dir, run_cli, run_dirs, write_idx
from mnist_lightning.data.files import MNIST_FILES, FileSpec


def pytest_collection_finish(session):
    """Missing data fails the run with one message: a test that skipped for want of data has not passed."""
    if any("mnist_dir" in getattr(item, "fixturenames", ()) for item in session.items) and real_data_dir() is None:
        where = f" (MNIST_DATA_DIR={os.environ['MNIST_DATA_DIR']})" if os.environ.get("MNIST_DATA_DIR") else ""
        pytest.exit(NO_DATA + where, returncode=4)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST files (MNIST_DATA_DIR, else data/)."""
    path = real_data_dir()
    assert path is not None, NO_DATA
    return path


@pytest.fixture(scope="session")
def exported(trained, mnist_dir):
    """(project folder, checkpoint, export folder, CompletedProcess) of `python -m mnist_lightning.export` on the
    shared trained run's epoch-1 checkpoint: its export/ holds model.onnx, model.pt2 and model.json."""
    cwd, run_dir, _ = trained
    checkpoint = next((run_dir / "checkpoints").glob("epoch_01-*.ckpt"))
    result = run_cli("mnist_lightning.export", f"ckpt_path={checkpoint}", cwd=cwd, data_dir=mnist_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, checkpoint, run_dir / "export", result


@pytest.fixture
def tiny_mnist(tmp_path) -> tuple[Path, dict[str, FileSpec]]:
    """A 300/100-image dataset in MNIST's IDX layout, with its own sizes and md5 sums."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "tiny" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "train_images": rng.integers(0, 256, (300, 28, 28)),
        "train_labels": np.arange(300) % 10,
        "test_images": rng.integers(0, 256, (100, 28, 28)),
        "test_labels": np.arange(100) % 10,
    }
    files = {}
    for key, array in arrays.items():
        path = raw / MNIST_FILES[key].name
        write_idx(path, array)
        files[key] = FileSpec(path.name, path.stat().st_size, hashlib.md5(path.read_bytes()).hexdigest())
    return tmp_path / "tiny", files


@pytest.fixture(scope="session")
def trained(tmp_path_factory, mnist_dir):
    """(project folder, run folder, CompletedProcess) of `python -m mnist_lightning.train` on the real data."""
    cwd = tmp_path_factory.mktemp("project")
    result = run_cli("mnist_lightning.train", *FAST, cwd=cwd, data_dir=mnist_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = run_dirs(cwd)
    return cwd, run_dir, result


@pytest.fixture(scope="session")
def postgres_url():
    """The SQLAlchemy URL of a real PostgreSQL server started for this test session (tests/helpers/postgres.py)."""
    with postgres_server() as url:
        yield url
