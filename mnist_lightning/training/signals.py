"""A clean stop on SIGTERM (pre-emption) and SIGINT (Ctrl-C): finish the batch, save `last.ckpt`, stop.

With several processes (DDP, one or several nodes) a signal to any of them stops all of them after the same
batch, and all of them take part in saving the checkpoint.

`train` then records the run as interrupted and exits with 128 + the signal number.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


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
        self._install()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # again: Lightning sets its own SIGTERM handler after on_fit_start, and under DDP that one broadcasts
        # from inside the handler, which breaks the collective the process is in when the signal is not rank 0's
        self._install()

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)  # teardown puts back what was there before fit

    def _handle(self, signum, frame) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            log.warning("%s received: stopping after the current batch and saving a checkpoint", self.signal_name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop = self.signal_name is not None
        if trainer.world_size > 1:  # a signal to any process (one node pre-empted) stops all of them at this batch
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            raise SIGTERMException()  # Lightning's own "stop now" path: on_exception hooks, then it propagates

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            return
        if self.signal_name is None:
            self.signal_name = "SIGINT" if isinstance(exception, KeyboardInterrupt) else "SIGTERM"
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the checkpoint short
        callback = trainer.checkpoint_callback
        folder = (
            Path(callback.dirpath)
            if callback is not None and callback.dirpath
            else Path(trainer.default_root_dir) / "checkpoints"
        )
        self.checkpoint = folder / "last.ckpt"
        trainer.save_checkpoint(self.checkpoint, weights_only=False)  # all of it: a resume needs the loops
        log.warning("Saved %s at epoch %d, step %d", self.checkpoint, trainer.current_epoch, trainer.global_step)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class Interrupted(Exception):
    """Training stopped on a signal after saving a resumable checkpoint."""

    def __init__(self, signal_name: str, checkpoint: Path | None):
        super().__init__(signal_name)
        self.signal_name, self.checkpoint = signal_name, checkpoint

    @property
    def exit_code(self) -> int:
        return 128 + int(getattr(signal, self.signal_name, signal.SIGTERM))
