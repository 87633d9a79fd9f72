"""The training recipe that train and retrain share: seed, build the datamodule, model, callbacks, loggers and
trainer from the config, fit, test the best checkpoint, write metrics.json, print a summary."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mnist_lightning.errors import UserError

log = logging.getLogger(__name__)


def fit_and_test(cfg: DictConfig, weights_from: Path | None = None, extra: dict | None = None) -> dict:
    """Train as `cfg` says; `weights_from`: a checkpoint whose weights the network starts from (fine-tuning; its
    network must be cfg.model.net); `extra`: what else metrics.json records (retrain's dataset and parent)."""
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from mnist_lightning.cli.build import build, build_callbacks, build_each, build_trainer, check_numbers
    from mnist_lightning.cli.ranks import check_num_nodes
    from mnist_lightning.runs import layout, record
    from mnist_lightning.training.checkpoint_io import AtomicCheckpointIO
    from mnist_lightning.training.results import fit_outcome, log_results, test_best
    from mnist_lightning.training.resume import plan_resume
    from mnist_lightning.training.signals import GracefulStop, Interrupted

    logging.getLogger("lightning").handlers.clear()  # Hydra's handlers already print and file its messages
    # Lightning asks the DataLoader itself for state_dict(); ours restores the epoch's position through the
    # datamodule's state_dict (data/datamodule.py), so a mid-epoch resume is exact (tests/test_fault.py)
    warnings.filterwarnings("ignore", message=".*ended before the epoch ended and your dataloader is not resumable")
    started, run_dir = time.time(), Path(cfg.paths.output_dir)
    check_numbers(cfg)
    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    resume = plan_resume(cfg.get("ckpt_path"), cfg.paths.outputs_root, run_dir, net, cfg.trainer)
    check_num_nodes(cfg.trainer.get("num_nodes"))
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = build(cfg.data, "data")
    model = build(cfg.model, "model")
    if weights_from is not None:
        from mnist_lightning.models import checkpoint as checkpoints

        model.net.load_state_dict(checkpoints.load_network(weights_from).state_dict())
    check_optimized_metric(cfg.get("optimized_metric"), model)
    loggers = build_each(cfg.get("logger"), "logger")
    callbacks = build_callbacks(cfg, loggers)
    trainer = build_trainer(
        cfg.trainer, datamodule=datamodule, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )

    if resume["from"]:
        log.info("Resuming from %s, writing into %s", resume["from"], run_dir)
    fit_started = time.time()
    try:
        # weights_only=True: checkpoints hold plain data only; torch's own default differs between versions
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume["from"], weights_only=True)
    except SIGTERMException:
        stop = next(c for c in callbacks if isinstance(c, GracefulStop))
        if trainer.is_global_zero:
            state = record.interrupted(trainer, stop.signal_name, stop.checkpoint, started, cfg.seed, resume)
            layout.write_metrics(run_dir, state)
        raise Interrupted(stop.signal_name or "SIGTERM", stop.checkpoint) from None
    fit = fit_outcome(trainer, datamodule, time.time() - fit_started)
    tested = {} if fit["pruned"] else test_best(trainer, model, datamodule, fit["best_checkpoint"])
    if not trainer.is_global_zero:  # with several processes only rank 0 writes the run's results
        return {}

    metrics = record.finished(run_dir, trainer, fit, tested, started=started, seed=cfg.seed, resume=resume)
    metrics.update(extra or {})
    layout.write_metrics(run_dir, metrics)
    log_results(trainer, without_secrets(OmegaConf.to_container(cfg, resolve=True)), metrics)
    log.info(record.summary(run_dir, metrics))
    return metrics


def check_optimized_metric(name: str | None, model) -> None:
    """Refuse, before any training, an `optimized_metric` the model never logs (a typo would fail every trial)."""
    known = getattr(model, "METRICS", None)
    if name and known is not None and name not in known:
        raise UserError(f"optimized_metric={name}: the model logs no such metric; choose one of {', '.join(known)}")


def without_secrets(params):
    """The config as the loggers get it, with the values of secret keys (a store URL may hold a password; a token,
    a salt) hidden: TensorBoard and MLflow keep what they are given."""
    from mnist_lightning.cli.keys import SECRET_KEYS

    if isinstance(params, dict):
        return {
            key: "<hidden>" if key in SECRET_KEYS and value is not None else without_secrets(value)
            for key, value in params.items()
        }
    if isinstance(params, list):
        return [without_secrets(item) for item in params]
    return params
