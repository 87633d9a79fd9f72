"""Our callbacks and the automatic precision choice, on stand-in trainers and CPU flag sets."""

from __future__ import annotations

import time

import pytest
import torch

from mnist_lightning.training import precision as hardware
from mnist_lightning.training.callbacks import EpochThroughput, target_reached


def fit_tiny(tiny_mnist, callbacks: list, max_epochs: int = 2, **trainer_kwargs):
    """A real Trainer fitting the perceptron on the tests' tiny IDX files: 250 train / 50 val images."""
    from functools import partial

    import lightning.pytorch as pl

    from mnist_lightning.data.datamodule import MNISTDataModule
    from mnist_lightning.models.lit_module import MNISTLitModule

    root, files = tiny_mnist
    datamodule = MNISTDataModule(data_dir=str(root), files=files, val_size=50, batch_size=25, eval_batch_size=25)
    model = MNISTLitModule({"arch": "mlp", "hidden": [16]}, optimizer=partial(torch.optim.Adam, lr=1e-3))
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        **trainer_kwargs,
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer


def test_epoch_throughput_counts_every_training_sample_of_each_epoch(tiny_mnist):
    throughput = EpochThroughput(window_size=2)
    started = time.perf_counter()
    fit_tiny(tiny_mnist, [throughput], max_epochs=3)
    elapsed = time.perf_counter() - started
    assert len(throughput.epoch_seconds) == len(throughput.samples_per_s) == 3
    assert 0 < sum(throughput.epoch_seconds) < elapsed  # training steps only: validation and setup are left out
    for seconds, rate in zip(throughput.epoch_seconds, throughput.samples_per_s, strict=True):
        # 10 batches of 25 per epoch; seconds are rounded to the millisecond, which on a fast machine (40 ms an
        # epoch) is more than 1% of them
        assert rate == pytest.approx(250 / seconds, rel=0.01 + 0.0005 / seconds)


def test_a_stopping_threshold_ends_training_at_the_first_validation_that_reaches_it(tiny_mnist):
    from lightning.pytorch.callbacks import EarlyStopping

    target = EarlyStopping(monitor="val/acc_best", mode="max", stopping_threshold=0.0, patience=1000)
    plateau = EarlyStopping(monitor="val/acc", mode="max", patience=5)
    trainer = fit_tiny(tiny_mnist, [target, plateau], max_epochs=5, val_check_interval=0.5)
    reached = target_reached([plateau, target], trainer, seconds=1.5)
    assert trainer.global_step == 5  # stopped at the first validation: half of the first epoch
    assert reached == {
        "metric": "val/acc_best",
        "value": round(float(trainer.callback_metrics["val/acc_best"]), 6),  # the value that crossed it
        "target": 0.0,
        "epoch": 0,
        "global_step": 5,
        "seconds": 1.5,
    }
    assert reached["value"] >= 0.0  # not the -inf EarlyStopping starts from
    assert target_reached([plateau], trainer, seconds=1.5) is None


def test_auto_precision_uses_bf16_only_where_the_cpu_runs_it_natively(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "fma"})
    precision, reason = hardware.auto_precision("cpu")
    assert precision == "32-true" and "emulated" in reason
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert hardware.auto_precision("auto") == ("bf16-mixed", "the CPU has avx512_bf16")


def test_auto_precision_on_gpus_follows_bf16_tensor_cores(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Some GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert hardware.auto_precision("gpu")[0] == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    assert hardware.auto_precision("auto")[0] == "32-true"


def compiled_module(compiled):
    """The LightningModule with model.compile=true, its compiled forward replaced by `compiled`."""
    from mnist_lightning.models.lit_module import MNISTLitModule

    module = MNISTLitModule({"arch": "mlp", "hidden": [8]}, compile=False)
    module.__dict__["_compiled"] = compiled
    return module


def test_a_compiler_failure_falls_back_to_eager_with_a_warning():
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C compiler here")

    module = compiled_module(torch.compile(torch.nn.Flatten(), backend=broken_backend))
    with pytest.warns(UserWarning, match="torch.compile failed here.*running uncompiled"):
        out = module(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10) and module.__dict__["_compiled"] is None


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory"), ValueError("a bug in forward"), RuntimeError("shape mismatch")],
)
def test_errors_of_running_the_model_are_not_hidden_by_the_fallback(error):
    def fails(x):
        raise error

    module = compiled_module(fails)
    with pytest.raises(type(error), match=str(error)):
        module(torch.zeros(2, 1, 28, 28))
    assert module.__dict__["_compiled"] is fails  # still compiled: nothing was given up
