"""Where the project and the real MNIST files are."""

from __future__ import annotations

import os
from pathlib import Path

from mnist_lightning.data.files import MNIST_FILES

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"

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
