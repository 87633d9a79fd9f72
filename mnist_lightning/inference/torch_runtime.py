"""Running a trained network: the device to run on, probabilities for prepared digits, logits for a whole split.

Networks come from `mnist_lightning.models.checkpoint.load_network` and run in eval mode under
`torch.inference_mode()`; inputs are normalised exactly as in training.
"""

from __future__ import annotations

import numpy as np
import torch

from mnist_lightning.data.transforms import normalize
from mnist_lightning.errors import UserError


def pick_device(name: str) -> torch.device:
    """`auto` (the GPU when there is one), `cpu`, `cuda`, `cuda:N` or another torch device name that exists here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"device={name}: not a device name; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise UserError(f"device={name}: no CUDA GPU is available here; use device=cpu or device=auto")
        if device.index is not None and device.index >= count:
            raise UserError(f"device={name}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "meta":
        raise UserError(f"device={name}: the meta device holds no data; use auto, cpu or cuda")
    elif device.type != "cpu":
        try:
            torch.empty(1, device=device)
        except Exception as exc:
            raise UserError(
                f"device={name}: not available here ({exc.__class__.__name__}); use auto, cpu or cuda"
            ) from exc
    return device


def probabilities(network: torch.nn.Module, digits: list[np.ndarray]) -> torch.Tensor:
    """Class probabilities (N, 10) for prepared 28x28 digits (`preprocess.prepare(...).digit`, values in 0..1)."""
    device = next(network.parameters()).device
    batch = torch.from_numpy(np.stack(digits) * 255).to(device)
    with torch.inference_mode():
        return network(normalize(batch)).softmax(1).cpu()


class TorchModel:
    """A network in PyTorch, with the same `probabilities` as the exported runtimes (NumPy out)."""

    runtime = "torch"

    def __init__(self, network: torch.nn.Module) -> None:
        self.network = network

    def probabilities(self, digits: list[np.ndarray]) -> np.ndarray:
        return probabilities(self.network, digits).numpy()


def logits_in_batches(
    network: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Logits (N, 10) on the CPU for uint8 images (N, 28, 28), `batch_size` at a time on `device`."""
    with torch.inference_mode():
        return torch.cat(
            [
                network(normalize(chunk.to(device, non_blocking=True))).float().cpu()
                for chunk in images.split(batch_size)
            ]
        )
