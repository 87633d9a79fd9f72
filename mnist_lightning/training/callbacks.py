"""Callbacks built on Lightning's own: training throughput per epoch, and what a target-metric stop reached.

Stopping at a target metric is Lightning's `EarlyStopping(stopping_threshold=...)`, added as one more callback
(the README shows the overrides); `target_reached` reads back when it fired, for metrics.json.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, ThroughputMonitor
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.trainer.states import RunningStage


class EpochThroughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor (training steps only: validation time is left out; logged as
    `train|device/samples_per_sec` and friends), plus one figure per epoch for metrics.json:
    `epoch_seconds` and `samples_per_s` (all processes together), also logged as `perf/train_samples_per_s`,
    and `first_step_at`, the clock time (time.time()) when the first training step began: start-up ends there."""

    def __init__(self, window_size: int = 100) -> None:
        super().__init__(batch_size_fn=lambda batch: len(batch[1]), window_size=window_size)
        self.epoch_seconds: list[float] = []
        self.samples_per_s: list[float] = []
        self._epoch_start = (0.0, 0)
        self.first_step_at: float | None = None

    def _totals(self) -> tuple[float, int]:
        """(seconds of training steps, samples) since training started, as the monitor has counted them."""
        throughput = self._throughputs.get(RunningStage.TRAINING)
        try:
            totals = throughput.compute() if throughput is not None else {}
        except IndexError:  # nothing counted yet
            totals = {}
        return float(totals.get("time", 0.0)), int(totals.get("samples", 0))

    def on_train_batch_start(self, trainer: pl.Trainer, *_) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.time()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._totals()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:  # the monitor counts on the first process only
            return
        (seconds, samples), (seconds0, samples0) = self._totals(), self._epoch_start
        if samples <= samples0 or seconds <= seconds0:
            return
        self.epoch_seconds.append(round(seconds - seconds0, 3))
        self.samples_per_s.append(round((samples - samples0) * trainer.world_size / (seconds - seconds0), 1))
        pl_module.log("perf/train_samples_per_s", self.samples_per_s[-1], rank_zero_only=True)


def target_reached(callbacks: list, trainer: pl.Trainer, seconds: float) -> dict | None:
    """When an EarlyStopping with a `stopping_threshold` stopped the run because the threshold was reached."""
    for callback in callbacks:
        if isinstance(callback, EarlyStopping) and callback.stopping_reason == EarlyStoppingReason.STOPPING_THRESHOLD:
            return {
                "metric": callback.monitor,
                # the value that crossed the threshold: EarlyStopping stops before it updates best_score
                "value": round(float(trainer.callback_metrics.get(callback.monitor, callback.best_score)), 6),
                "target": callback.stopping_threshold,
                "epoch": callback.stopped_epoch,
                "global_step": trainer.global_step,
                "seconds": round(seconds, 2),
            }
    return None
