"""What a fit and its test left, read off the Trainer for the run's record (runs/record.py) and its loggers."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger

from mnist_lightning.runs.record import number
from mnist_lightning.training.callbacks import EpochThroughput, target_reached
from mnist_lightning.training.pruning import OptunaPruning

log = logging.getLogger(__name__)


def fit_outcome(trainer: pl.Trainer, datamodule, fit_seconds: float) -> dict:
    """Read right after fit: test() replaces the callback metrics (val/acc, val/loss, train/loss, ...)."""
    callbacks = trainer.callbacks
    throughput = next((c for c in callbacks if isinstance(c, EpochThroughput)), None)
    pruning = next((c for c in callbacks if isinstance(c, OptunaPruning)), None)
    val_samples, val_split_size = _evaluated(trainer, datamodule, "val_set", trainer.num_val_batches)
    return {
        "pruned": pruning is not None and pruning.pruned_at_epoch is not None,
        "best_checkpoint": trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None,
        "last_logged": {k: number(v) for k, v in sorted(trainer.callback_metrics.items()) if v.numel() == 1},
        "target_reached": target_reached(callbacks, trainer, fit_seconds),
        "val_samples": val_samples,
        "val_split_size": val_split_size,
        "epoch_time_s": throughput.epoch_seconds if throughput else None,
        "train_samples_per_s": throughput.samples_per_s if throughput else None,
        # the clock time of the first training step: start-up ends there
        "first_step_at": throughput.first_step_at if throughput else None,
        "data_md5": getattr(datamodule, "file_md5", None),
        # the MLflow run of logger=mlflow, so that `register` can file the model's artifacts with it
        "mlflow": next(
            (
                {"run_id": lg.run_id, "experiment_id": lg.experiment_id}
                for lg in trainer.loggers
                if isinstance(lg, MLFlowLogger)
            ),
            None,
        ),
    }


def test_best(trainer: pl.Trainer, model, datamodule, checkpoint: str | None) -> dict:
    """Test results of `checkpoint` (the final weights when None), with how many test images they cover."""
    results = trainer.test(model, datamodule=datamodule, ckpt_path=checkpoint or None, verbose=False, weights_only=True)
    if not results:  # trainer.limit_test_batches=0
        log.info("No test: trainer.limit_test_batches is 0")
        return {}
    samples, split_size = _evaluated(trainer, datamodule, "test_set", trainer.num_test_batches)
    return {**results[0], "samples": samples, "split_size": split_size}


def log_results(trainer: pl.Trainer, params: dict, metrics: dict) -> None:
    """The settings to every logger; TensorBoard's HParams tab pairs them with the results."""
    final = {k: metrics[k] for k in ("val/acc_best", "test/acc", "test/loss") if metrics[k] is not None}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics=final, step=trainer.global_step)
        else:
            logger.log_hyperparams(params)
        logger.finalize("success")


def _evaluated(trainer: pl.Trainer, datamodule, split_name: str, batches) -> tuple[int | None, int | None]:
    """(images one evaluation looked at, images in the split): equal unless trainer.limit_*_batches cut it."""
    split = getattr(datamodule, split_name, None)
    if split is None or not hasattr(datamodule, "eval_batch_size_for"):
        return None, None
    per_batch = datamodule.eval_batch_size_for(trainer.strategy.root_device)
    return min(len(split), int(sum(batches or [0])) * per_batch * trainer.world_size), len(split)
