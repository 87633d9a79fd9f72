"""Shared fixtures: the real offline MNIST, tiny IDX files written by the tests, composed configs."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import FAST, NO_DATA, postgres_server, real_data_dir, run_cli, run_dirs, write_idx
from mnist_lightning.data.files import MNIST_FILES, FileSpec
from mnist_lightning.serving.settings import usable_cores


def pytest_configure(config):
    """Several pytest workers share the cores: each worker, and every command it starts, gets its share of threads.

    PyTorch (OpenMP) otherwise starts one thread per core in every process, and two workers training at once on 2
    cores then spin against each other: two 300-step training runs took 98 s side by side with 2 threads each and
    45 s with 1 (2-core AMD EPYC, 2026-12-06). A thread count the caller set is kept.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        share = max(1, usable_cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        os.environ.setdefault("MKL_NUM_THREADS", str(share))
        if "torch" in sys.modules:  # imported before this hook (tests/helpers): its thread pool is already sized
            sys.modules["torch"].set_num_threads(share)


# The test files that take longest, longest first (the per-file sums of a full run's `--durations=0`, 2-core AMD
# EPYC, 2026-12-06). They start first, and pytest-xdist hands the short files to whichever worker is free, so that
# both workers end together; `make test` passes --no-loadscope-reorder, which keeps this order. A file missing from
# the list only starts later.
LONGEST_FIRST = (
    "test_registry.py",
    "test_sweeps.py",
    "test_fault.py",
    "test_export.py",
    "test_benchmarks.py",
    "test_notebooks.py",
    "test_container.py",
    "test_loop.py",
    "test_train_integration.py",
    "test_dvc.py",
    "test_multinode.py",
    "test_distributed_search.py",
    "test_serve_limits.py",
    "test_retrain.py",
    "test_evaluate.py",
    "test_packaging.py",
    "test_config.py",
)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """Long files first (LONGEST_FIRST), the rest in their usual order; a file's tests keep their own order.

    `make test` hands out work by xdist_group (--dist loadgroup): each file is a group of its own, so that its
    module fixtures are built once, except the files that use the `exported` fixture (a trained run and its
    export, about a minute of CPU), which form one group so that one worker builds it.
    """
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    sharing = {item.path for item in items if "exported" in item.fixturenames}
    for item in items:
        item.add_marker(pytest.mark.xdist_group("exported" if item.path in sharing else item.path.name))


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
