"""The LightningModule: any network from `mnist_lightning.models`, cross-entropy, torchmetrics, optimizer factories."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_lightning.errors import UserError
from mnist_lightning.models import build_network


def _compile_failure(exc: BaseException) -> bool:
    """Whether `exc` is torch.compile failing to compile (Dynamo or a backend), not an error of running the model."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError, InvalidCxxCompiler, OperatorIssue

    chain, cause = [], exc
    while cause is not None and len(chain) < 20:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(e, torch.OutOfMemoryError) for e in chain):
        return False
    return isinstance(exc, (TorchDynamoException, CppCompileError, InvalidCxxCompiler, OperatorIssue))


class MNISTLitModule(pl.LightningModule):
    """Trains a network given as `{"arch": name, **kwargs}`.

    Only that description is saved in checkpoints (plain data), so `load_from_checkpoint` rebuilds the
    run's own network whatever the current config says. `optimizer` and `scheduler` are factories
    (Hydra `_partial_` configs): `optimizer(params)`, `scheduler(optimizer)`.
    """

    # every metric it logs, by the `stage/name` convention; `optimized_metric` must be one of them
    METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc")

    def __init__(
        self,
        net: dict,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "epoch",
        num_classes: int = 10,
        compile: bool = False,
        channels_last: bool = False,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval={scheduler_interval!r}: must be 'step' or 'epoch'")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing}: must be at least 0 and below 1 (0.1 is usual)")
        # NHWC activations: faster convolutions on many CPUs (oneDNN) and on tensor cores; weights in checkpoints
        # load into either layout
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if optimizer is not None:  # fail now, naming the setting, rather than when training starts
            try:
                optimizer([torch.nn.Parameter(torch.zeros(1))])
            except (ValueError, TypeError) as exc:
                raise ValueError(f"optimizer: {exc}") from exc
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.net = build_network(**net).to(memory_format=self.memory_format)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # torch.compile'd view of self.net, kept out of the module tree so checkpoints hold plain weights
        self.__dict__["_compiled"] = torch.compile(self.net) if compile else None

        # average="micro" is plain accuracy; MulticlassAccuracy's own default is the macro mean of per-class recall
        self.train_acc, self.val_acc, self.test_acc = (
            MulticlassAccuracy(num_classes, average="micro") for _ in range(3)
        )
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # saved in checkpoints, so a resumed run keeps its best so far

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x
        compiled = self.__dict__["_compiled"]
        if compiled is None:
            return self.net(x)
        try:
            return compiled(x)
        except Exception as exc:
            if not _compile_failure(exc):
                raise  # out of memory, a bug in the network, bad input: eager would not help
            # no C compiler, an unsupported platform or operator: train uncompiled instead
            self.__dict__["_compiled"] = None
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            rank_zero_warn(
                f"model.compile=true: torch.compile failed here ({exc.__class__.__name__}: "
                f"{first_line}); running uncompiled"
            )
            return self.net(x)

    def on_train_start(self) -> None:
        # After a resume the scheduler comes from the checkpoint: its length must match this run's.
        for name, length in (self._schedule_length() if self.scheduler_factory else {}).items():
            for config in self.trainer.lr_scheduler_configs:
                restored = getattr(config.scheduler, name, None)
                if restored is not None and restored != length:
                    raise UserError(
                        f"ckpt_path: the checkpoint's {type(config.scheduler).__name__} spans {restored} steps but "
                        f"this run would take {length}. Resume with the original run's trainer.max_epochs and "
                        f"limits, or start a new run with more epochs to train longer."
                    )

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        # smoothing only in the training loss: val/loss and test/loss stay plain cross-entropy, comparable across runs
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        self.train_acc(logits.argmax(1), y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, prog_bar=True)
        return loss

    def _evaluate(self, batch, loss_metric: MeanMetric, acc_metric: MulticlassAccuracy, stage: str) -> None:
        x, y = batch
        logits = self(x)
        loss_metric(F.cross_entropy(logits, y), weight=len(y))
        acc_metric(logits.argmax(1), y)
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True)
        self.log(f"{stage}/acc", acc_metric, on_step=False, on_epoch=True, prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_loss, self.val_acc, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # a couple of batches before training: not a real epoch
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_loss, self.test_acc, "test")

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(1)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError("MNISTLitModule was built without an optimizer factory; it can only predict.")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        length = self._schedule_length()
        try:
            scheduler = self.scheduler_factory(optimizer=optimizer, **length)
        except (ValueError, ZeroDivisionError) as exc:  # e.g. OneCycleLR over a handful of steps
            raise UserError(
                f"scheduler: {exc.__class__.__name__}: {exc} (schedule length {length}); "
                f"use scheduler=none for very short runs"
            ) from exc
        interval = self.hparams.scheduler_interval
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def _schedule_length(self) -> dict:
        """Fill a scheduler's length (OneCycleLR's total_steps, CosineAnnealingLR's T_max) from the trainer."""
        given = self.scheduler_factory.keywords if isinstance(self.scheduler_factory, partial) else {}
        func = getattr(self.scheduler_factory, "func", self.scheduler_factory)
        params = inspect.signature(func).parameters
        steps = int(self.trainer.estimated_stepping_batches)
        length = steps if self.hparams.scheduler_interval == "step" else self.trainer.max_epochs
        for name in ("total_steps", "T_max"):
            if name in params and given.get(name) is None:
                return {name: length}
        return {}
