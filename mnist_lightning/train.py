"""Train a network on MNIST: `python -m mnist_lightning.train [overrides]`.

The recipe: seed, build the datamodule, model, callbacks, loggers and trainer from the config,
fit, test the best checkpoint, write metrics.json, print a summary, return the optimised metric.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mnist_lightning.errors import UserError

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    from mnist_lightning import runs
    from mnist_lightning.config import build, build_each

    logging.getLogger("lightning").handlers.clear()  # Hydra's handlers already print and file its messages

    started = time.time()
    run_dir = Path(cfg.paths.output_dir)
    resume_from = runs.resume_checkpoint(cfg.get("ckpt_path"), cfg.paths.outputs_root)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = build(cfg.data, "data")
    model = build(cfg.model, "model")
    callbacks = build_each(cfg.get("callbacks"), "callbacks")
    loggers = build_each(cfg.get("logger"), "logger")
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress bar it was told not to show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    pruning = None
    if cfg.get("optuna_trial"):  # set by the Optuna sweeper for each trial
        from mnist_lightning.pruning import OptunaPruning

        trial = cfg.optuna_trial
        pruner = build(trial.pruner, "optuna_trial.pruner") if trial.get("pruner") else None
        pruning = OptunaPruning(trial.storage, trial.study_name, trial.number, pruner=pruner)
        callbacks.append(pruning)
    trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)

    if resume_from:
        log.info("Resuming from %s", resume_from)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    if trainer.interrupted:
        raise UserError("Training was interrupted; last.ckpt in the run folder can resume it (ckpt_path=...).")

    val_acc_best = _number(trainer.callback_metrics.get("val/acc_best"))  # test() replaces callback_metrics
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    pruned = pruning is not None and pruning.pruned_at_epoch is not None
    tested = {} if pruned else trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)[0]

    metrics = {
        "state": "pruned" if pruned else "finished",
        "val/acc_best": val_acc_best,
        "test/acc": _number(tested.get("test/acc")),
        "test/loss": _number(tested.get("test/loss")),
        "best_checkpoint": str(Path(best).resolve().relative_to(run_dir.resolve())) if best else None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_time_s": round(time.time() - started, 2),
        "seed": cfg.seed,
        "resumed_from": str(resume_from) if resume_from else None,
        "data_md5": datamodule.file_md5,
        **runs.lineage(),
    }
    runs.write_metrics(run_dir, metrics)

    params = OmegaConf.to_container(cfg, resolve=True)
    final = {k: metrics[k] for k in ("val/acc_best", "test/acc", "test/loss") if metrics[k] is not None}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):  # the HParams tab pairs the settings with these results
            logger.log_hyperparams(params, metrics=final, step=trainer.global_step)
        else:
            logger.log_hyperparams(params)
        logger.finalize("success")

    log.info(_summary(run_dir, metrics))
    return metrics


def _number(value) -> float | None:
    return None if value is None else round(float(value), 6)


def _summary(run_dir: Path, metrics: dict) -> str:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}%"

    rows = [
        ("run folder", str(run_dir)),
        ("best val acc", pct(metrics["val/acc_best"])),
        ("test acc" + (" (best checkpoint)" if metrics["best_checkpoint"] else ""), pct(metrics["test/acc"])),
        ("test loss", "n/a" if metrics["test/loss"] is None else f"{metrics['test/loss']:.4f}"),
        ("best checkpoint", metrics["best_checkpoint"] or "none saved: tested the final weights"),
        ("epochs", str(metrics["epochs"])),
        ("wall time", f"{metrics['wall_time_s']:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(["", "Summary"] + [f"  {name:<{width}}  {value}" for name, value in rows])


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mnist_lightning import runs

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # batches are built in memory
    warnings.filterwarnings("ignore", message=".*treespec.*LeafSpec.*")  # raised inside Lightning itself
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        metrics = train(cfg)
    except Exception as exc:
        if isinstance(exc, UserError):
            log.error("%s", exc)
        elif multirun:
            log.exception("This job failed")
        else:
            raise
        runs.write_metrics(cfg.paths.output_dir, {"state": "failed", "error": f"{exc.__class__.__name__}: {exc}"})
        if multirun:
            return None  # the sweep goes on with its other jobs
        sys.exit(2)
    return metrics.get(cfg.optimized_metric) if metrics["state"] == "finished" else None


if __name__ == "__main__":
    main()
