"""Callbacks of our own: epoch timing and stopping once a target metric is reached."""

from __future__ import annotations

import time

import lightning.pytorch as pl


class Throughput(pl.Callback):
    """Times each training epoch (its batches plus its validation) and logs `perf/train_samples_per_s`.

    `epoch_seconds` and `samples_per_s` keep one entry per epoch of this process, for metrics.json
    and the benchmarks.
    """

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self.samples_per_s: list[float] = []
        self._started = 0.0
        self._samples = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()
        self._samples = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._samples += len(batch[1])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = time.perf_counter() - self._started
        if not self._samples:
            return
        self.epoch_seconds.append(round(seconds, 3))
        self.samples_per_s.append(round(self._samples * trainer.world_size / seconds, 1))
        pl_module.log("perf/train_samples_per_s", self.samples_per_s[-1], rank_zero_only=True)


class TargetMetric(pl.Callback):
    """Stops training as soon as `monitor` reaches `target` (checked after every validation).

    `reached` records when: epoch, global step and the seconds since training started.
    """

    def __init__(self, monitor: str = "val/acc", target: float = 0.99, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode={mode!r}: must be 'max' or 'min'")
        self.monitor, self.target, self.mode = monitor, target, mode
        self.reached: dict | None = None
        self._started = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.reached is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if (value >= self.target) if self.mode == "max" else (value <= self.target):
            self.reached = {"metric": self.monitor, "value": round(value, 6), "target": self.target,
                            "epoch": trainer.current_epoch, "global_step": trainer.global_step,
                            "seconds": round(time.perf_counter() - self._started, 2)}
            trainer.should_stop = True
