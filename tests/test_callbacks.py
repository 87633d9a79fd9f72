"""Our callbacks and the automatic precision choice, on stand-in trainers and CPU flag sets."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from mnist_lightning import hardware
from mnist_lightning.callbacks import TargetMetric


def fake_trainer(value: float, sanity: bool = False) -> SimpleNamespace:
    return SimpleNamespace(callback_metrics={"val/acc": torch.tensor(value)}, sanity_checking=sanity,
                           current_epoch=1, global_step=120, should_stop=False)


def test_target_metric_stops_at_the_first_validation_that_reaches_it():
    callback = TargetMetric(monitor="val/acc", target=0.99)
    callback.on_train_start(None, None)
    time.sleep(0.2)
    below, sanity, above = fake_trainer(0.985), fake_trainer(0.999, sanity=True), fake_trainer(0.9912)
    for trainer in (below, sanity):
        callback.on_validation_end(trainer, None)
        assert not trainer.should_stop and callback.reached is None
    callback.on_validation_end(above, None)
    assert above.should_stop
    assert callback.reached["value"] == 0.9912 and callback.reached["global_step"] == 120
    assert 0.2 <= callback.reached["seconds"] < 5  # measured from the start of training


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
    from mnist_lightning.models.module import MNISTLitModule

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


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory"), ValueError("a bug in forward"),
                                   RuntimeError("shape mismatch")])
def test_errors_of_running_the_model_are_not_hidden_by_the_fallback(error):
    def fails(x):
        raise error

    module = compiled_module(fails)
    with pytest.raises(type(error), match=str(error)):
        module(torch.zeros(2, 1, 28, 28))
    assert module.__dict__["_compiled"] is fails  # still compiled: nothing was given up
