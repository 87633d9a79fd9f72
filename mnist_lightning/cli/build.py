"""Building objects from the composed Hydra config, with one clear message when a setting is wrong."""

from __future__ import annotations

import re
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from mnist_lightning.errors import UserError


def build(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """`instantiate(node)`; a bad setting becomes a UserError that names the config key."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, UserError):
            raise cause from None
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else cause.__class__.__name__
        # "batch_size=0: ..." or "optimizer: ..." name a parameter of this node: join them into one key
        separator = "." if re.match(r"[A-Za-z_]\w*[=:]", detail) else ": "
        raise UserError(f"{key}{separator}{detail}") from exc


# settings that Lightning, torch or numpy would only trip over later, with a traceback or a message that names no
# key ("'<=' not supported between instances of 'float' and 'str'"): key -> (kind, smallest, largest)
NUMBERS = {
    "seed": ("whole", 0, 2**32 - 1),  # numpy's range for a seed
    "model.optimizer.lr": ("number", None, None),  # its range: torch's own "Invalid learning rate" line
    "trainer.max_epochs": ("whole", -1, None),  # -1: no limit
    "trainer.max_steps": ("whole", -1, None),
    "trainer.limit_train_batches": ("number", 0, None),  # a share (<= 1.0) or a number of batches
    "trainer.limit_val_batches": ("number", 0, None),
    "trainer.limit_test_batches": ("number", 0, None),
}


def check_numbers(cfg: DictConfig, numbers: dict[str, tuple[str, int | None, int | None]] | None = None) -> None:
    """A UserError naming the key for a setting of `numbers` (train's NUMBERS by default) that is not a number of
    its kind ("whole" or "number") or lies outside its range (null is left to the code that reads it)."""
    from omegaconf import OmegaConf

    for key, (kind, low, high) in (NUMBERS if numbers is None else numbers).items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole and not (kind == "number" and isinstance(value, float)):
            wanted = "a whole number" if kind == "whole" else "a number"
            raise UserError(f"{key}={value!r}: must be {wanted}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise UserError(f"{key}={value!r}: must be {bounds}")


def build_data(node: DictConfig, stage: str) -> Any:
    """The datamodule of the `data` group with its files checked and its splits for `stage` in memory ("test": the
    test split; "fit": training and validation too)."""
    datamodule = build(node, "data")
    datamodule.prepare_data()
    datamodule.setup(stage)
    return datamodule


def build_each(group: DictConfig | None, key: str) -> list:
    """Instantiate every entry of a dict-of-configs group (callbacks, loggers); null entries are skipped."""
    if not group:
        return []
    return [build(node, f"{key}.{name}") for name, node in group.items() if node is not None and "_target_" in node]


def build_callbacks(cfg: DictConfig, loggers: list) -> list:
    """The config's callbacks that fit this trainer and its loggers, then what every training run needs: Optuna's
    pruning in a trial of a search, the random states in every checkpoint, a graceful stop on a signal."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar

    from mnist_lightning.training.pruning import OptunaPruning
    from mnist_lightning.training.resume import ResumeState
    from mnist_lightning.training.signals import GracefulStop

    callbacks = build_each(cfg.get("callbacks"), "callbacks")
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress bar it was told not to show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    trial = cfg.get("optuna_trial")  # set by the Optuna sweeper for each trial
    if trial:
        pruner = build(trial.pruner, "optuna_trial.pruner") if trial.get("pruner") else None
        callbacks.append(OptunaPruning.for_trial(trial, pruner, monitor=cfg.optimized_metric))
    return [*callbacks, ResumeState(), GracefulStop()]


def build_trainer(node: DictConfig, datamodule: Any = None, **kwargs: Any) -> Any:
    """The Lightning Trainer from the `trainer` group, with `precision: auto` resolved for this machine.

    Under DDP, Lightning gives each process a DistributedSampler over the data unless told not to. A
    datamodule that already splits its batches by rank says so with `shards_by_rank = True` (ours does);
    any other datamodule keeps Lightning's default, so no rank trains on the whole data by mistake.
    """
    import logging

    from mnist_lightning.training.precision import auto_precision

    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(no_tips)
    precision = node.get("precision", "32-true")
    if precision == "auto":
        precision, reason = auto_precision(node.get("accelerator", "auto"))
        logging.getLogger(__name__).info("trainer.precision=auto chose %s: %s", precision, reason)
    if "use_distributed_sampler" not in node:
        kwargs["use_distributed_sampler"] = not getattr(datamodule, "shards_by_rank", False)
    if isinstance(node.get("profiler"), str):
        kwargs["profiler"] = build_profiler(node.profiler, node.get("default_root_dir"))
    if node.get("sync_batchnorm") and not on_gpus(node.get("accelerator", "auto")):
        kwargs["sync_batchnorm"] = False  # DDP refuses SyncBatchNorm layers on CPU modules
        logging.getLogger(__name__).info(
            "trainer.sync_batchnorm needs GPUs (torch's SyncBatchNorm has no CPU kernels): on CPUs each process "
            "normalises over its own batch, and DDP gives every process rank 0's running statistics"
        )
    return build(node, "trainer", precision=precision, **kwargs)


def on_gpus(accelerator: str) -> bool:
    import torch

    return accelerator in ("gpu", "cuda") or accelerator == "auto" and torch.cuda.is_available()


def no_tips(record) -> bool:
    """A logging filter: Lightning's advertising tips (installing litlogger, ...) are not the user's business."""
    return not str(record.msg).startswith("💡")


PROFILERS = ("simple", "advanced", "pytorch")


def build_profiler(name: str, run_dir: str | None) -> Any:
    """Lightning's profiler by name, writing its report to `<run_dir>/profile/fit-profile.txt` (Lightning's own
    string form would print it to the console only)."""
    from lightning.pytorch import profilers

    classes = {
        "simple": profilers.SimpleProfiler,
        "advanced": profilers.AdvancedProfiler,
        "pytorch": profilers.PyTorchProfiler,
    }
    if name not in classes:
        raise UserError(f"trainer.profiler={name!r}: choose one of {', '.join(PROFILERS)}, or null for none")
    dirpath = f"{run_dir}/profile" if run_dir else None
    return classes[name](dirpath=dirpath, filename="profile")
