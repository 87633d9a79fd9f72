"""Train a network on MNIST: `python -m mnist_lightning.train [overrides]`.

The recipe: seed, build the datamodule, model, callbacks, loggers and trainer from the config,
fit, test the best checkpoint, write metrics.json, print a summary, return the optimised metric.
"""

from __future__ import annotations

import logging
import os
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
    stop = fault.GracefulStop()
    callbacks += [fault.ResumeState(), stop]
    trainer = build_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                            plugins=[fault.AtomicCheckpointIO()])

    previous = (runs.read_metrics(run_dir) or {}) if resume_from else {}
    resumes = previous.get("resumes", [])
    if resume_from:
        resumes.append({"from": str(resume_from), "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        log.info("Resuming from %s, writing into %s", resume_from, run_dir)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    except SIGTERMException:
        if trainer.is_global_zero:
            runs.write_metrics(run_dir, {
                "state": "interrupted", "signal": stop.signal_name,
                "checkpoint": str(stop.checkpoint) if stop.checkpoint else None,
                "epochs": trainer.current_epoch, "global_step": trainer.global_step, "seed": cfg.seed,
                "resumes": resumes, "wall_time_s": round(time.time() - started, 2),
            })
        raise Interrupted(stop.signal_name or "SIGTERM", stop.checkpoint) from None

    val_acc_best = _number(trainer.callback_metrics.get("val/acc_best"))  # test() replaces callback_metrics
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    pruned = pruning is not None and pruning.pruned_at_epoch is not None
    tested = {} if pruned else trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)[0]
    if not trainer.is_global_zero:  # with several processes only rank 0 writes the run's results
        return {}
    throughput = next((c for c in callbacks if isinstance(c, Throughput)), None)
    target = next((c for c in callbacks if isinstance(c, TargetMetric)), None)

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
        "precision": str(trainer.precision),
        "world_size": trainer.world_size,
        "epoch_time_s": throughput.epoch_seconds if throughput else None,
        "train_samples_per_s": throughput.samples_per_s if throughput else None,
        "target_reached": target.reached if target else None,
        "resumed_from": str(resume_from) if resume_from else None,
        "resumes": resumes,
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
    except Interrupted as stop:
        resume = f"python -m mnist_lightning.train ckpt_path={stop.checkpoint}" if stop.checkpoint else "no checkpoint"
        log.error("Interrupted by %s; state saved. Continue with: %s", stop.signal_name, resume)
        sys.exit(stop.exit_code)  # also ends a sweep: the signal was meant for the whole process
    except Exception as exc:
        if isinstance(exc, UserError):
            log.error("%s", exc)
        elif multirun:
            log.exception("This job failed")
        else:
            raise
        error = f"{exc.__class__.__name__}: {exc}"
        previous = runs.read_metrics(cfg.paths.output_dir) if cfg.get("ckpt_path") else None
        if previous and previous.get("state") in ("finished", "interrupted"):  # a refused resume loses nothing
            runs.write_metrics(cfg.paths.output_dir, {**previous, "resume_error": error})
        else:
            runs.write_metrics(cfg.paths.output_dir, {"state": "failed", "error": error})
        if multirun:
            return None  # the sweep goes on with its other jobs
        sys.exit(2)
    return metrics.get(cfg.optimized_metric) if metrics.get("state") == "finished" else None


def resume_in_place(argv: list[str]) -> list[str]:
    """`ckpt_path=last|FILE` of a run folder: continue that run in its own folder with its own overrides.

    Returns the command-line arguments Hydra should see: the run's saved overrides, then the ones
    given now (which win), `hydra.run.dir` set to the run's folder, and the new invocation's config
    saved under `.hydra/resume-<time>` so the original `.hydra/` stays as it was. Anything else
    (sweeps, checkpoints outside a run folder, missing files) is left to `train` to report.
    """
    from mnist_lightning import runs

    if os.environ.get(RESUMED_ENV) or any(a in ("-m", "--multirun") or a.startswith("-") for a in argv):
        return argv
    given = {a.split("=", 1)[0].lstrip("+~"): a for a in argv if "=" in a}
    ckpt = given.get("ckpt_path", "=").split("=", 1)[1]
    if ckpt in ("", "null", "None") or "hydra.run.dir" in given:
        return argv
    outputs_root = given.get("paths.outputs_root", "=outputs").split("=", 1)[1]
    try:
        checkpoint = runs.resume_checkpoint(ckpt, outputs_root)
    except UserError:
        return argv
    run_dir = checkpoint.resolve().parent.parent
    if checkpoint.resolve().parent.name != runs.CHECKPOINT_DIR or not (run_dir / ".hydra").is_dir():
        return argv
    saved = {o.split("=", 1)[0].lstrip("+~"): o for o in runs.read_overrides(run_dir) if "=" in o}
    merged = {k: v for k, v in saved.items() if k != "ckpt_path" and not k.startswith("hydra.")}
    merged.update(given)
    merged["ckpt_path"] = f"ckpt_path={checkpoint.resolve()}"
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    os.environ[RESUMED_ENV] = "1"  # DDP workers re-run this command line: expand it only once
    return [*merged.values(), f"hydra.run.dir={run_dir}", f"hydra.output_subdir=.hydra/resume-{stamp}"]


def check_writable(argv: list[str]) -> None:
    """Refuse at once, in one line, when the folder runs are written to cannot be written."""
    given = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if "=" in a}
    target = Path(given.get("hydra.run.dir") or given.get("hydra.sweep.dir") or "outputs")
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        print(f"Cannot write run folders under {target}: {existing} is not a writable folder. Fix that, or "
              f"run from a folder you can write to, or give hydra.run.dir=SOME/WRITABLE/FOLDER.", file=sys.stderr)
        sys.exit(2)


RESUMED_ENV = "MNIST_LIGHTNING_RESUMED"


if __name__ == "__main__":
    sys.argv[1:] = resume_in_place(sys.argv[1:])
    check_writable(sys.argv[1:])
    main()
