"""Surviving faults: atomic checkpoint files, RNG states in checkpoints, and a clean stop on SIGTERM/SIGINT.

- `AtomicCheckpointIO` writes each checkpoint to a temporary file in the same folder, fsyncs it and
  renames it into place, so a kill at any moment leaves the previous file or the new one, never half a file.
- `ResumeState` stores the torch, numpy, Python (and CUDA) random states in every checkpoint and puts them
  back on resume, so dropout continues exactly where it stopped.
- `GracefulStop` turns SIGTERM (pre-emption) and SIGINT (Ctrl-C) into a stop after the current batch,
  saves a resumable `last.ckpt` and lets `train` record the run as interrupted.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lightning import runs

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` into `.NAME.XXXX.tmp` beside the target, flush, fsync, then `os.replace`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        runs.atomic_write(path, lambda f: torch.save(checkpoint, f))


def rng_states() -> dict:
    """The global random states as plain data (tensors, ints, lists): loadable with `weights_only=True`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumeState(pl.Callback):
    """Saves the random states with every checkpoint and restores them when training resumes from one."""

    def state_dict(self) -> dict:
        return {"rng_states": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        set_rng_states(state_dict["rng_states"])


class GracefulStop(pl.Callback):
    """On SIGTERM or SIGINT: finish the current batch, save `last.ckpt`, stop.

    `signal_name` tells `train` that the run was interrupted (and by what). A second Ctrl-C while
    the checkpoint is written is ignored, so the file is complete.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.checkpoint: Path | None = None
        self._previous: dict[int, Any] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            log.warning("%s received: stopping after the current batch and saving a checkpoint", self.signal_name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.signal_name is not None:
            raise SIGTERMException()  # Lightning's own "stop now" path: on_exception hooks, then it propagates

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            return
        if self.signal_name is None:
            self.signal_name = "SIGINT" if isinstance(exception, KeyboardInterrupt) else "SIGTERM"
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the checkpoint short
        callback = trainer.checkpoint_callback
        folder = Path(callback.dirpath) if callback is not None and callback.dirpath else Path(
            trainer.default_root_dir) / "checkpoints"
        self.checkpoint = folder / "last.ckpt"
        trainer.save_checkpoint(self.checkpoint)
        log.warning("Saved %s at epoch %d, step %d", self.checkpoint, trainer.current_epoch, trainer.global_step)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
