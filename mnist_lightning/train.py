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

    from mnist_lightning import fault, runs
    from mnist_lightning.callbacks import TargetMetric, Throughput
    from mnist_lightning.config import build, build_each, build_trainer

    logging.getLogger("lightning").handlers.clear()  # Hydra's handlers already print and file its messages

    started = time.time()
    run_dir = Path(cfg.paths.output_dir)
    resume_from = runs.resume_checkpoint(cfg.get("ckpt_path"), cfg.paths.outputs_root)
    if resume_from:
        runs.check_resumable(resume_from, OmegaConf.to_container(cfg.model.net, resolve=True))
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
        from mnist_lightning.pruning import OptunaPruning

        trial = cfg.optuna_trial
        pruner = build(trial.pruner, "optuna_trial.pruner") if trial.get("pruner") else None
        pruning = OptunaPruning(trial.storage, trial.study_name, trial.number, pruner=pruner,
                                monitor=cfg.optimized_metric)
        callbacks.append(pruning)
    stop = fault.GracefulStop()
    callbacks += [fault.ResumeState(), stop]
    trainer = build_trainer(cfg.trainer, datamodule=datamodule, callbacks=callbacks, logger=loggers or False,
                            plugins=[fault.AtomicCheckpointIO()])

    previous = (runs.read_metrics(run_dir) or {}) if resume_from else {}
    resumes = previous.get("resumes", [])
    if resume_from:
        resumes.append({"from": str(resume_from), "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        log.info("Resuming from %s, writing into %s", resume_from, run_dir)
    try:
        # weights_only=True: checkpoints hold plain data only; torch's own default differs between versions
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    except SIGTERMException:
        if trainer.is_global_zero:
            runs.write_metrics(run_dir, {
                "state": "interrupted", "signal": stop.signal_name,
                "checkpoint": str(stop.checkpoint) if stop.checkpoint else None,
                "epochs": trainer.current_epoch, "global_step": trainer.global_step, "seed": cfg.seed,
                "resumes": resumes, "wall_time_s": round(time.time() - started, 2),
            })
        raise Interrupted(stop.signal_name or "SIGTERM", stop.checkpoint) from None

    # what fit logged last (test() replaces callback_metrics): val/acc, val/loss, train/loss, ...
    last_logged = {k: _number(v) for k, v in sorted(trainer.callback_metrics.items()) if v.numel() == 1}
    val_samples, val_split_size = _validated(trainer, datamodule)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    pruned = pruning is not None and pruning.pruned_at_epoch is not None
    tested = {}
    if not pruned:
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False,
                               weights_only=True)
        tested = results[0] if results else {}  # no results when trainer.limit_test_batches=0
        if not results:
            log.info("No test: trainer.limit_test_batches is 0")
    if not trainer.is_global_zero:  # with several processes only rank 0 writes the run's results
        return {}
    throughput = next((c for c in callbacks if isinstance(c, Throughput)), None)
    target = next((c for c in callbacks if isinstance(c, TargetMetric)), None)

    metrics = {
        "state": "pruned" if pruned else "finished",
        "val/acc_best": last_logged.get("val/acc_best"),
        "test/acc": _number(tested.get("test/acc")),
        "test/loss": _number(tested.get("test/loss")),
        "best_checkpoint": runs.path_in_run(best, run_dir) if best else None,
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
        "target_reached": target.reached if target else None,
        "resumed_from": str(resume_from) if resume_from else None,
        "resumes": resumes,
        "data_md5": getattr(datamodule, "file_md5", None),
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


class Interrupted(Exception):
    """Training stopped on a signal after saving a resumable checkpoint."""

    def __init__(self, signal_name: str, checkpoint: Path | None):
        super().__init__(signal_name)
        self.signal_name, self.checkpoint = signal_name, checkpoint

    @property
    def exit_code(self) -> int:
        import signal

        return 128 + int(getattr(signal, self.signal_name, signal.SIGTERM))


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


def _record_failure(run_dir: Path, resuming: bool, exc: BaseException) -> None:
    from mnist_lightning import runs

    error = f"{exc.__class__.__name__}: {exc}"
    previous = runs.read_metrics(run_dir) if resuming else None
    if previous and previous.get("state") in ("finished", "interrupted"):  # a refused resume loses nothing
        runs.write_metrics(run_dir, {**previous, "resume_error": error})
    else:
        runs.write_metrics(run_dir, {"state": "failed", "error": error})


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from mnist_lightning import overrides, runs

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # batches are built in memory
    warnings.filterwarnings("ignore", message=".*treespec.*LeafSpec.*")  # raised inside Lightning itself
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    run_dir = Path(cfg.paths.output_dir)
    lock = runs.RunLock(run_dir) if is_rank_zero() else None
    try:
        if lock is not None:
            lock.acquire()
    except runs.RunLocked as exc:  # nothing is written into a folder another process trains in
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
            _record_failure(run_dir, bool(cfg.get("ckpt_path")), exc)
        if not user_error and not multirun:
            raise  # a bug, not a setting: the traceback is what a developer needs
        if multirun:
            return None  # the sweep goes on with its other jobs and reports the failures at its end
        sys.exit(2)
    finally:
        if lock is not None:
            lock.release()
    return objective(metrics, cfg.optimized_metric) if metrics.get("state") == "finished" else None


def resume_in_place(argv: list[str]) -> list[str]:
    """`ckpt_path=last|FILE` of a run folder: continue that run in its own folder with its own overrides.

    Returns the command-line arguments Hydra should see: the run's saved overrides, then the ones
    given now (which win), `hydra.run.dir` set to the run's folder, and the new invocation's config
    saved under `.hydra/resume-<time>` so the original `.hydra/` stays as it was. A missing checkpoint
    and a folder another process trains in are refused here, in one line, before Hydra makes or
    touches any folder. Sweeps and checkpoints outside a run folder are left to `train`.
    """
    from mnist_lightning import overrides, runs

    if os.environ.get(RESUMED_ENV) or any(a.startswith("-") for a in argv):
        return argv
    try:
        given = overrides.by_key(argv)
    except Exception:  # a malformed override: Hydra reports it in its own words
        return argv
    ckpt = overrides.value_of(given["ckpt_path"]) if "ckpt_path" in given else None
    if ckpt in (None, "", "None") or "hydra.run.dir" in given:
        return argv
    outputs_root = overrides.value_of(given["paths.outputs_root"]) if "paths.outputs_root" in given else "outputs"
    try:
        checkpoint = runs.resume_checkpoint(ckpt, outputs_root)
    except UserError as exc:  # refused before Hydra makes a run folder for a run that cannot start
        print(exc, file=sys.stderr)
        sys.exit(2)
    run_dir = checkpoint.resolve().parent.parent
    if checkpoint.resolve().parent.name != runs.CHECKPOINT_DIR or not (run_dir / ".hydra").is_dir():
        return argv
    holder = runs.lock_holder(run_dir)
    if holder is not None:
        print(f"ckpt_path={ckpt}: {runs.in_use_message(run_dir, holder)}", file=sys.stderr)
        sys.exit(2)
    try:
        saved = overrides.by_key(runs.read_overrides(run_dir))
    except Exception:
        saved = {}
    merged = {k: v for k, v in saved.items() if k not in ("ckpt_path", "optuna_trial") and not k.startswith("hydra.")}
    if "optuna_trial" in saved and "optuna_trial" not in given:
        print(f"{run_dir} was a trial of an Optuna search; it resumes as a plain run that no longer reports to the "
              f"study (the trial is closed there).", file=sys.stderr)
    merged.update(given)
    merged["ckpt_path"] = overrides.assign("ckpt_path", checkpoint.resolve())
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    os.environ[RESUMED_ENV] = "1"  # DDP workers re-run this command line: expand it only once
    return [*merged.values(), overrides.assign("hydra.run.dir", run_dir), f"hydra.output_subdir=.hydra/resume-{stamp}"]


def check_writable(argv: list[str]) -> None:
    """Refuse at once, in one line, when the folder runs are written to cannot be written."""
    from mnist_lightning import overrides

    try:
        given = {k: overrides.value_of(v) for k, v in overrides.by_key([a for a in argv if "=" in a]).items()}
    except Exception:
        return  # Hydra reports the malformed override
    target = Path(given.get("hydra.run.dir") or given.get("hydra.sweep.dir") or given.get("paths.outputs_root")
                  or "outputs")
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        print(f"Cannot write run folders under {target}: {existing} is not a writable folder. Fix that, or "
              f"run from a folder you can write to, or give paths.outputs_root=SOME/WRITABLE/FOLDER.", file=sys.stderr)
        sys.exit(2)


RESUMED_ENV = "MNIST_LIGHTNING_RESUMED"


def cli() -> None:
    """`python -m mnist_lightning.train` and the `mnist-train` command."""
    from mnist_lightning import sweeps

    sys.argv[1:] = resume_in_place(sys.argv[1:])
    check_writable(sys.argv[1:])
    main()
    if sweeps.last_report and sweeps.last_report["failed"]:
        sys.exit(1)  # the sweep ran all its jobs, but not all of them succeeded


if __name__ == "__main__":
    cli()
