"""Feedback datasets: the labelled answers of the prediction log, as a versioned folder that training reads.

A dataset is a folder `<root>/feedback-<hash>/` holding, in MNIST's IDX format, the 28x28 inputs the model saw and
the labels users gave, split into `train` and `holdout` (a fixed share, chosen by a hash of each request id, so an
answer stays on its side when the dataset grows), the request ids of each split, and `manifest.json`: each file's
md5, the counts, and the dataset's hash (sha256 over the files' md5s). The rows are sorted by request id first, so
the same answers always give the same files and the same hash, whatever order the log returned them in; the folder
is named by the hash and written once (a second retrain on the same answers reuses it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from mnist_lightning.data.files import idx_bytes, md5sum, read_idx
from mnist_lightning.errors import DataError

MANIFEST = "manifest.json"
FORMAT = 1
SPLITS = ("train", "holdout")


def holdout_side(request_id: str, share: float) -> bool:
    """Whether an answer belongs to the held-out split: fixed by its request id, not by the order of the rows."""
    return int(hashlib.sha256(request_id.encode()).hexdigest()[:8], 16) / 16**8 < share


def write_dataset(rows: list[dict], root: Path, holdout: float, source: str = "") -> Path:
    """The dataset of `rows` (request_id, input: 784 bytes, label) under `root`; its folder."""
    rows = sorted(rows, key=lambda row: row["request_id"])
    files: dict[str, bytes] = {}
    counts = {}
    for split in SPLITS:
        chosen = [row for row in rows if holdout_side(row["request_id"], holdout) == (split == "holdout")]
        images = np.frombuffer(b"".join(row["input"] for row in chosen), np.uint8).reshape(len(chosen), 28, 28)
        files[f"{split}-images-idx3-ubyte"] = idx_bytes(images)
        files[f"{split}-labels-idx1-ubyte"] = idx_bytes(np.array([row["label"] for row in chosen], np.uint8))
        files[f"{split}-request-ids.json"] = json.dumps([row["request_id"] for row in chosen], indent=0).encode()
        counts[split] = len(chosen)
    md5 = {name: hashlib.md5(data).hexdigest() for name, data in sorted(files.items())}
    digest = hashlib.sha256("".join(f"{name} {sum_}\n" for name, sum_ in md5.items()).encode()).hexdigest()
    folder = root / f"feedback-{digest[:12]}"
    if (folder / MANIFEST).is_file():
        return folder  # the same answers: the same files, written before
    manifest = {
        "format": FORMAT,
        "hash": digest,
        "files": md5,
        "counts": counts,
        "holdout": holdout,
        "source": source,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".writing-") as scratch:  # never a half-written dataset
        staged = Path(scratch) / folder.name
        staged.mkdir()
        for name, data in files.items():
            (staged / name).write_bytes(data)
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            os.rename(staged, folder)
        except OSError:  # written meanwhile by another process: the same content
            if not (folder / MANIFEST).is_file():
                shutil.rmtree(folder, ignore_errors=True)
                os.rename(staged, folder)
    return folder


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{folder} is not a feedback dataset ({MANIFEST}: {exc}); make one with python -m mnist_lightning.retrain"
        ) from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: format {manifest.get('format')!r}, this mnist_lightning reads format {FORMAT}")
    return manifest


def load_dataset(folder: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of one split, after checking every file against the
    manifest's md5; with the md5s checked (for a run's lineage)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    checked = {}
    for name in (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"):
        digest = md5sum(folder / name) if (folder / name).is_file() else "missing"
        if digest != manifest["files"].get(name):
            raise DataError(
                f"{folder / name}: md5 {digest}, the manifest says {manifest['files'].get(name)}: the dataset was "
                f"changed after it was written; make it again with python -m mnist_lightning.retrain"
            )
        checked[f"{folder.name}/{name}"] = digest
    images = read_idx(folder / f"{split}-images-idx3-ubyte", ndim=3)
    labels = read_idx(folder / f"{split}-labels-idx1-ubyte", ndim=1).long()
    return images, labels, checked
