"""Train a network on MNIST: `python -m mnist_lightning.train [overrides]` (or `mnist-train`).

The recipe: seed, build the datamodule, model, callbacks, loggers and trainer from the config,
fit, test the best checkpoint, write metrics.json, print a summary, return the optimised metric.
"""

from __future__ import annotations

import logging
import os
import shlex
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
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from mnist_lightning.cli.build import build, build_each, build_trainer
    from mnist_lightning.runs import layout, lineage, resolve
    from mnist_lightning.training.callbacks import EpochThroughput, target_reached
    from mnist_lightning.training.checkpoint_io import AtomicCheckpointIO
    from mnist_lightning.training.resume import ResumeState, check_resumable
    from mnist_lightning.training.signals import GracefulStop, Interrupted

    logging.getLogger("lightning").handlers.clear()  # Hydra's handlers already print and file its messages

    started = time.time()
    run_dir = Path(cfg.paths.output_dir)
    resume_from = resolve.resume_checkpoint(cfg.get("ckpt_path"), cfg.paths.outputs_root)
    if resume_from:
        check_resumable(resume_from, OmegaConf.to_container(cfg.model.net, resolve=True))
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = build(cfg.data, "data")
    model = build(cfg.model, "model")
    check_optimized_metric(cfg.get("optimized_metric"), model)
    callbacks = build_each(cfg.get("callbacks"), "callbacks")
    loggers = build_each(cfg.get("logger"), "logger")
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress bar it was told not to show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    pruning = None
    if cfg.get("optuna_trial"):  # set by the Optuna sweeper for each trial
        from mnist_lightning.training.pruning import OptunaPruning

        trial = cfg.optuna_trial
        pruner = build(trial.pruner, "optuna_trial.pruner") if trial.get("pruner") else None
        pruning = OptunaPruning(
            trial.storage, trial.study_name, trial.number, pruner=pruner, monitor=cfg.optimized_metric
        )
        callbacks.append(pruning)
    stop = GracefulStop()
    callbacks += [ResumeState(), stop]
    trainer = build_trainer(
        cfg.trainer, datamodule=datamodule, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )

    previous = (layout.read_metrics(run_dir) or {}) if resume_from else {}
    resumes = previous.get("resumes", [])
    if resume_from:
        resumes.append({"from": str(resume_from), "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        log.info("Resuming from %s, writing into %s", resume_from, run_dir)
    fit_started = time.time()
    try:
        # weights_only=True: checkpoints hold plain data only; torch's own default differs between versions
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    except SIGTERMException:
        if trainer.is_global_zero:
            layout.write_metrics(
                run_dir,
                {
                    "state": "interrupted",
                    "signal": stop.signal_name,
                    "checkpoint": str(stop.checkpoint) if stop.checkpoint else None,
                    "epochs": trainer.current_epoch,
                    "global_step": trainer.global_step,
                    "seed": cfg.seed,
                    "resumes": resumes,
                    "wall_time_s": round(time.time() - started, 2),
                },
            )
        raise Interrupted(stop.signal_name or "SIGTERM", stop.checkpoint) from None
    fit_seconds = time.time() - fit_started

    # what fit logged last (test() replaces callback_metrics): val/acc, val/loss, train/loss, ...
    last_logged = {k: _number(v) for k, v in sorted(trainer.callback_metrics.items()) if v.numel() == 1}
    reached = target_reached(callbacks, trainer, fit_seconds)  # reads callback_metrics, which test() replaces
    val_samples, val_split_size = _validated(trainer, datamodule)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    pruned = pruning is not None and pruning.pruned_at_epoch is not None
    tested = {}
    if not pruned:
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True)
        tested = results[0] if results else {}  # no results when trainer.limit_test_batches=0
        if not results:
            log.info("No test: trainer.limit_test_batches is 0")
    if not trainer.is_global_zero:  # with several processes only rank 0 writes the run's results
        return {}
    throughput = next((c for c in callbacks if isinstance(c, EpochThroughput)), None)

    metrics = {
        "state": "pruned" if pruned else "finished",
        "val/acc_best": last_logged.get("val/acc_best"),
        "test/acc": _number(tested.get("test/acc")),
        "test/loss": _number(tested.get("test/loss")),
        "best_checkpoint": layout.path_in_run(best, run_dir) if best else None,
        # the id that names this model everywhere: evaluate, the service's responses, exports
        "model_version": lineage.model_version(best) if best else None,
        "last_logged": last_logged,
        "val_samples": val_samples,
        "val_split_size": val_split_size,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_time_s": round(time.time() - started, 2),
        "seed": cfg.seed,
        "precision": str(trainer.precision),
        "world_size": trainer.world_size,
        "epoch_time_s": throughput.epoch_seconds if throughput else None,
        "train_samples_per_s": throughput.samples_per_s if throughput else None,
        # the clock time of the first training step, and the seconds from this function's start to it
        "first_step_at": throughput.first_step_at if throughput else None,
        "setup_s": round(throughput.first_step_at - started, 2) if throughput and throughput.first_step_at else None,
        "target_reached": reached,
        "resumed_from": str(resume_from) if resume_from else None,
        "resumes": resumes,
        "data_md5": getattr(datamodule, "file_md5", None),
        "mlflow": _mlflow_run(trainer),
        **lineage.lineage(),
    }
    layout.write_metrics(run_dir, metrics)

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


def check_optimized_metric(name: str | None, model) -> None:
    """Refuse, before any training, an `optimized_metric` the model never logs (a typo would fail every trial)."""
    known = getattr(model, "METRICS", None)
    if name and known is not None and name not in known:
        raise UserError(f"optimized_metric={name}: the model logs no such metric; choose one of {', '.join(known)}")


def objective(metrics: dict, name: str | None) -> float | None:
    """The value of metric `name` for a sweeper: from metrics.json, else as fit last logged it."""
    if not name:
        return None
    value = metrics.get(name)
    return value if value is not None else metrics.get("last_logged", {}).get(name)


def _validated(trainer, datamodule) -> tuple[int | None, int | None]:
    """(images one validation looked at, images in the validation split): equal unless validation was limited."""
    split = getattr(datamodule, "val_set", None)
    if split is None or not hasattr(datamodule, "eval_batch_size_for"):
        return None, None
    batches = int(sum(trainer.num_val_batches or [0]))
    per_batch = datamodule.eval_batch_size_for(trainer.strategy.root_device)
    return min(len(split), batches * per_batch * trainer.world_size), len(split)


def _mlflow_run(trainer) -> dict | None:
    """The MLflow run of logger=mlflow, so that `register` can file the model's artifacts with it."""
    from lightning.pytorch.loggers import MLFlowLogger

    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            return {"run_id": logger.run_id, "experiment_id": logger.experiment_id}
    return None


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


def is_rank_zero() -> bool:
    """Before the trainer exists: DDP launchers (Lightning's, torchrun, SLURM) give each process its rank in the
    environment; only the first process owns the run folder."""
    return all(int(os.environ.get(k) or 0) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


@hydra.main(version_base="1.3", config_path="pkg://mnist_lightning.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from mnist_lightning.cli import overrides
    from mnist_lightning.runs import layout
    from mnist_lightning.runs.lock import RunLock, RunLocked
    from mnist_lightning.training.signals import Interrupted

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # batches are built in memory
    warnings.filterwarnings("ignore", message=".*treespec.*LeafSpec.*")  # raised inside Lightning itself
    warnings.filterwarnings("ignore", message=".*flops_per_batch.*")  # FLOPs are not counted for these networks
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    run_dir = Path(cfg.paths.output_dir)
    lock = RunLock(run_dir) if is_rank_zero() else None
    try:
        if lock is not None:
            lock.acquire()
    except RunLocked as exc:  # nothing is written into a folder another process trains in
        log.error("%s", exc)
        if multirun:
            return None
        sys.exit(2)
    try:
        metrics = train(cfg)
    except Interrupted as stop:
        resume = "no checkpoint was saved"
        if stop.checkpoint:
            argument = overrides.assign("ckpt_path", stop.checkpoint)
            resume = shlex.join(["python", "-m", "mnist_lightning.train", argument])
        log.error("Interrupted by %s; state saved. Continue with: %s", stop.signal_name, resume)
        sys.exit(stop.exit_code)  # also ends a sweep: the signal was meant for the whole process
    except Exception as exc:
        # Lightning's MisconfigurationException is a setting Lightning refuses: one line, like ours
        user_error = isinstance(exc, (UserError, MisconfigurationException))
        if user_error:
            log.error("%s", exc)
        elif multirun:
            log.exception("This job failed")
        if lock is not None:
            layout.record_failure(run_dir, exc, resuming=bool(cfg.get("ckpt_path")))
        if not user_error and not multirun:
            raise  # a bug, not a setting: the traceback is what a developer needs
        if multirun:
            return None  # the sweep goes on with its other jobs and reports the failures at its end
        sys.exit(2)
    finally:
        if lock is not None:
            lock.release()
    return objective(metrics, cfg.optimized_metric) if metrics.get("state") == "finished" else None


def cli() -> None:
    """`python -m mnist_lightning.train` and the `mnist-train` command."""
    from mnist_lightning.cli import argv, sweep_report

    sys.argv[1:] = argv.resume_in_place(sys.argv[1:])
    argv.check_writable(sys.argv[1:])
    main()
    if sweep_report.last_report and sweep_report.last_report["failed"]:
        sys.exit(1)  # the sweep ran all its jobs, but not all of them succeeded


if __name__ == "__main__":
    cli()
