"""The MNIST files: where they live, how to verify them, how to read and download them.

Nothing here knows Lightning or Hydra; `datamodule.py` builds on it. The IDX reader is a few lines
of NumPy: torchvision's MNIST dataset would also read them, but as one PIL image per sample.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnist_lightning.errors import DataError


@dataclass(frozen=True)
class FileSpec:
    name: str
    size: int
    md5: str


# The original uncompressed IDX files with their published sizes and md5 sums.
MNIST_FILES = {
    "train_images": FileSpec("train-images-idx3-ubyte", 47_040_016, "6bbc9ace898e44ae57da46a324031adb"),
    "train_labels": FileSpec("train-labels-idx1-ubyte", 60_008, "a25bea736e30d166cdddb491f175f624"),
    "test_images": FileSpec("t10k-images-idx3-ubyte", 7_840_016, "2646ac647ad5339dbf082846283269ea"),
    "test_labels": FileSpec("t10k-labels-idx1-ubyte", 10_008, "27ae3e4e09519cfbb04c329615203637"),
}


def raw_dir(data_dir: str | Path) -> Path:
    """The folder torchvision's MNIST uses for the raw files under `data_dir`."""
    return Path(data_dir) / "MNIST" / "raw"


def missing_files(data_dir: str | Path, files: dict[str, FileSpec] = MNIST_FILES) -> list[str]:
    return [spec.name for spec in files.values() if not (raw_dir(data_dir) / spec.name).is_file()]


def md5sum(path: Path, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(data_dir: str | Path, files: dict[str, FileSpec] = MNIST_FILES) -> dict[str, str]:
    """Check each file's size and md5; return {file name: md5}. Raises DataError naming the bad file."""
    folder = raw_dir(data_dir)
    sums = {}
    for spec in files.values():
        path = folder / spec.name
        if not path.is_file():
            raise DataError(f"MNIST file {path} is missing. {how_to_fix(data_dir, files)}")
        size = path.stat().st_size
        if size != spec.size:
            raise DataError(
                f"MNIST file {path} has {size:,} bytes, expected {spec.size:,} (truncated or not the original). "
                f"Delete it so it is downloaded again, or replace it with the original file."
            )
        digest = md5sum(path)
        if digest != spec.md5:
            raise DataError(
                f"MNIST file {path} is corrupted: md5 {digest}, expected {spec.md5}. "
                f"Delete it so it is downloaded again, or replace it with the original file."
            )
        sums[spec.name] = digest
    return sums


def read_idx(path: Path, ndim: int) -> torch.Tensor:
    """Read an uncompressed IDX file of unsigned bytes (MNIST's format) into a uint8 tensor."""
    data = path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != ndim:
        raise DataError(f"{path} is not an IDX file of unsigned bytes with {ndim} dimension(s).")
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{path} has {len(data):,} bytes but its header {shape} needs {expected:,}.")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())


def idx_bytes(array: np.ndarray) -> bytes:
    """An array of unsigned bytes as an IDX file (MNIST's format): the inverse of read_idx."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def load_split(data_dir: str | Path, train: bool, files: dict[str, FileSpec] = MNIST_FILES):
    """Images (N, 28, 28) uint8 and labels (N,) int64 of the training or the test files."""
    prefix = "train" if train else "test"
    folder = raw_dir(data_dir)
    images = read_idx(folder / files[f"{prefix}_images"].name, ndim=3)
    labels = read_idx(folder / files[f"{prefix}_labels"].name, ndim=1).long()
    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} {prefix} images but {len(labels)} labels.")
    return images, labels


def download(data_dir: str | Path, files: dict[str, FileSpec] = MNIST_FILES) -> None:
    """Fetch the MNIST files with torchvision into `data_dir/MNIST/raw`."""
    from torchvision.datasets import MNIST

    try:
        raw_dir(data_dir).mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            MNIST(root=str(data_dir), train=train, download=True)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError... for the same cause
        reason = " ".join(str(exc).split())  # torchvision's message spans several lines
        raise DataError(f"Could not download MNIST ({reason}). {how_to_fix(data_dir, files)}") from exc


def fetch(data_dir: str | Path = "data", record: str | Path | None = None) -> int:
    """`make data` (`python -m mnist_lightning.data.files [DIR [RECORD]]`): download and verify the files; one line
    and exit status 2 when that fails. `record`: a JSON file to write {file name: md5} to once they are verified
    (the DVC pipeline's first stage, whose output the training stage depends on)."""
    import json
    import sys

    try:
        if missing_files(data_dir):
            download(data_dir)
        sums = verify_files(data_dir)
    except DataError as exc:
        print(exc, file=sys.stderr)
        return 2
    if record is not None:  # whole or not at all: written beside, then renamed
        record = Path(record)
        record.parent.mkdir(parents=True, exist_ok=True)
        partial = record.with_name(record.name + ".partial")
        partial.write_text(json.dumps(sums, indent=2, sort_keys=True) + "\n")
        partial.replace(record)
    print(f"MNIST is in {raw_dir(data_dir).resolve()}")
    return 0


def how_to_fix(data_dir: str | Path, files: dict[str, FileSpec]) -> str:
    names = ", ".join(spec.name for spec in files.values())
    return (
        f"Put the four uncompressed files ({names}) in {raw_dir(data_dir).resolve()}, "
        f"or point to a folder that has them in MNIST/raw with data.data_dir=PATH (or MNIST_DATA_DIR=PATH)."
    )


if __name__ == "__main__":
    import sys

    sys.exit(fetch(*sys.argv[1:3]))
