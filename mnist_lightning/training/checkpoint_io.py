"""Checkpoint files written whole or not at all, whatever moment the process is killed.

Lightning's own TorchCheckpointIO writes in place; this one keeps its loading and replaces the writing.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from mnist_lightning.runs import atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` into `.NAME.XXXX.tmp` beside the target, flush, fsync, then `os.replace`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic.write(path, lambda f: torch.save(checkpoint, f))
