"""model.json, the contract of an export folder: its file names, its format number, where a checkpoint's export
lives, and reading it. Reading needs nothing but the standard library, so ONNX Runtime serving starts without
torch and without the code that writes exports (mnist_lightning.artifacts.export)."""

from __future__ import annotations

import json
from pathlib import Path

from mnist_lightning.errors import UserError
from mnist_lightning.runs import layout

ONNX_FILE, PT2_FILE, META_FILE = "model.onnx", "model.pt2", "model.json"
INPUT, OUTPUT = "image", "logits"
FORMAT = 1  # of model.json


def default_dir(checkpoint: str | Path) -> Path:
    """`<run folder>/export` for a checkpoint of a run, else an `export` folder beside the checkpoint."""
    return (layout.run_of_checkpoint(checkpoint) or Path(checkpoint).resolve().parent) / "export"


def read_meta(folder: str | Path) -> dict:
    """model.json of an export folder; UserError when there is none or it is not one."""
    path = Path(folder) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{folder}: no export there ({META_FILE} is missing); run python -m mnist_lightning.export first"
        ) from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable {META_FILE} ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path}: not a model.json this version reads (format {FORMAT}); export again")
    return meta
