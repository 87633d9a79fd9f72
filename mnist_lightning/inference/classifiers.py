"""One way to get a classifier for a checkpoint, whatever runs it: `runtime=torch` (the checkpoint itself) or
`runtime=onnx` (its export, in ONNX Runtime, without importing torch). Both answer `probabilities(digits)`."""

from __future__ import annotations

from pathlib import Path

from mnist_lightning.errors import UserError

RUNTIMES = ("torch", "onnx")


def load_classifier(
    checkpoint: str | Path, runtime: str = "torch", export_dir: str | Path | None = None, device: str = "cpu"
):
    if runtime == "torch":
        from mnist_lightning.inference.runtime import TorchModel
        from mnist_lightning.models.checkpoint import load_network

        return TorchModel(load_network(checkpoint, map_location=device))
    if runtime == "onnx":
        from mnist_lightning.inference import artifacts, onnx_runtime

        folder = Path(export_dir) if export_dir else artifacts.default_dir(checkpoint)
        return onnx_runtime.load_export(folder, checkpoint)[0]
    raise UserError(f"runtime={runtime}: use {' or '.join(RUNTIMES)}")
