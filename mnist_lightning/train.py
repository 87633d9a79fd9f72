"""Train a network on MNIST: `python -m mnist_lightning.train [overrides]` (or `mnist-train`).

The recipe: seed, build the datamodule, model, callbacks, loggers and trainer from the config,
fit, test the best checkpoint, write metrics.json, print a summary, return the optimised metric.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_lightning.cli.task import CONFIG_PATH, check_overrides, unresolvable
from mnist_lightning.errors import UserError

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict:
    """The recipe (cli/recipe.py, which retrain shares): build, fit, test, record; metrics.json's record."""
    from mnist_lightning.cli.recipe import fit_and_test

    return fit_and_test(cfg)


def objective(metrics: dict, name: str | None) -> float | None:
    """The value of metric `name` for a sweeper: from metrics.json, else as fit last logged it."""
    if not name:
        return None
    value = metrics.get(name)
    return value if value is not None else metrics.get("last_logged", {}).get(name)


def is_rank_zero() -> bool:
    """Before the trainer exists: DDP launchers (Lightning's, torchrun, SLURM) give each process its rank in the
    environment; only the first process owns the run folder."""
    return all(int(os.environ.get(k) or 0) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from mnist_lightning.cli import overrides, ranks
    from mnist_lightning.runs import layout, record
    from mnist_lightning.runs.lock import RunLock, RunLocked
    from mnist_lightning.training.signals import Interrupted

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # batches are built in memory
    warnings.filterwarnings("ignore", message=".*treespec.*LeafSpec.*")  # raised inside Lightning itself
    warnings.filterwarnings("ignore", message=".*flops_per_batch.*")  # FLOPs are not counted for these networks
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    run_dir = Path(cfg.paths.output_dir)
    if not multirun:
        ranks.publish_run_dir(str(run_dir))  # the other nodes of a torchrun launch write into this folder too
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
        user_error = isinstance(exc, (UserError, MisconfigurationException)) or unresolvable(exc) is not None
        if user_error:
            log.error("%s", unresolvable(exc) or exc)
        elif multirun:
            log.exception("This job failed")
        failure = record.failed(run_dir, exc, resuming=bool(cfg.get("ckpt_path"))) if lock is not None else None
        if failure is not None:
            layout.write_metrics(run_dir, failure)
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
    from mnist_lightning.cli import argv, ranks, sweep_report

    check_overrides("train", sys.argv[1:])
    sys.argv[1:] = argv.resume_in_place(sys.argv[1:])
    try:
        sys.argv[1:] = ranks.shared_run_dir(sys.argv[1:])  # every node of a multi-node launch: one run folder
    except UserError as exc:
        log.error("%s", exc)
        sys.exit(2)
    argv.check_writable(sys.argv[1:])
    main()
    if sweep_report.last_report and sweep_report.last_report["failed"]:
        sys.exit(1)  # the sweep ran all its jobs, but not all of them succeeded


if __name__ == "__main__":
    cli()
