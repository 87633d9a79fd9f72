"""Shared fixtures: the real offline MNIST, tiny IDX files written by the tests, composed configs."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mnist_lightning.data.files import MNIST_FILES, FileSpec

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "mnist_lightning" / "conf"


NO_DATA = (
    "The real MNIST files are needed by these tests and were not found. Put the four uncompressed files "
    "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) in "
    "data/MNIST/raw/ (`make data` downloads them), or set MNIST_DATA_DIR to a folder holding MNIST/raw/."
)


def real_data_dir() -> Path | None:
    """The real MNIST files: MNIST_DATA_DIR, else the project's own data/ (the training default)."""
    configured = os.environ.get("MNIST_DATA_DIR")
    candidates = [Path(configured)] if configured else [ROOT / "data"]
    for folder in candidates:
        if all((folder / "MNIST" / "raw" / spec.name).is_file() for spec in MNIST_FILES.values()):
            return folder
    return None


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


def run_cli(module: str, *overrides: str, cwd: Path, data_dir: Path, timeout: int = 600):
    """Run `python -m module overrides...` in `cwd` (its outputs/ lands there)."""
    env = {**os.environ, "MNIST_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


# A short real training run that several test modules share: 2 epochs of 150 batches, validated on the whole
# split (so model_ref=best compares it), a checkpoint kept for each epoch and a periodic last.ckpt every 100 steps
# (at steps 100 and 200, between the epoch ends at 150 and 300).
FAST = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=150",
    "callbacks.model_checkpoint.save_top_k=-1",
    "callbacks.periodic_checkpoint.every_n_train_steps=100",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
]


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(cwd: Path, data_dir: Path, *overrides: str, port: int | None = None, wait: bool = True):
    """`python -m mnist_lightning.serve` on 127.0.0.1 and a free port, as a subprocess; waits for /health."""
    import httpx

    port = port or free_port()
    log_path = cwd / f"serve-{port}.log"
    env = {**os.environ, "MNIST_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mnist_lightning.serve", f"port={port}", *overrides],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    handle = SimpleNamespace(process=process, port=port, url=f"http://127.0.0.1:{port}", log=log_path.read_text)
    deadline = time.monotonic() + 180
    while wait:
        assert process.poll() is None, f"the server exited with {process.returncode}:\n{handle.log()[-3000:]}"
        try:
            if httpx.get(f"{handle.url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not answer /health within 180 s:\n" + handle.log()[-3000:]
        time.sleep(0.2)
    return handle


def stop_server(handle) -> int:
    """SIGTERM, as a process manager stops a service; the exit status."""
    if handle.process.poll() is None:
        handle.process.send_signal(signal.SIGTERM)
    return handle.process.wait(60)


def run_without(missing_module: str, verb: str, cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    """`python -m mnist_lightning.<verb>` in a process where `missing_module` cannot be imported, as on an install
    without the extra that brings it."""
    code = (
        f"import sys; sys.modules[{missing_module!r}] = None; sys.argv = [{verb!r}]; "
        f"from mnist_lightning.{verb} import main; main()"
    )
    env = {**os.environ, "MNIST_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
