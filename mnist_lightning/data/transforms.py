"""What happens to a batch of digits on its device: normalisation (training, evaluation and prediction alike)
and the optional random affine augmentation of training batches. Plain torch: no Lightning, no Hydra."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Statistics of the 60,000 training images, used by training, evaluation and prediction alike.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Pixels in 0..255 (uint8 or float), (B, 28, 28) or (B, 1, 28, 28) -> float (B, 1, 28, 28) as in training."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return (images.float() - MNIST_MEAN * 255) / (MNIST_STD * 255)


class RandomAffine:
    """A small random rotation, translation and scale per image, applied to a normalised batch on its device."""

    def __init__(self, degrees: float = 10.0, translate: float = 0.1, scale: tuple[float, float] = (0.9, 1.1)):
        if degrees < 0 or not 0 <= translate < 1 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"augment: degrees={degrees}, translate={translate}, scale={scale} out of range")
        self.degrees, self.translate, self.scale = degrees, translate, tuple(scale)

    def __call__(self, images: torch.Tensor, seed: tuple[int, ...]) -> torch.Tensor:
        n = images.shape[0]
        generator = torch.Generator().manual_seed(hash(seed) & 0x7FFF_FFFF_FFFF)
        uniform = torch.rand(n, 4, generator=generator, dtype=torch.float64) * 2 - 1  # in [-1, 1)
        angle = torch.deg2rad(uniform[:, 0] * self.degrees)
        scale = self.scale[0] + (uniform[:, 1] + 1) / 2 * (self.scale[1] - self.scale[0])
        shift = uniform[:, 2:] * self.translate * 2  # grid coordinates span [-1, 1], i.e. 2 units per image
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
        background = MNIST_MEAN / MNIST_STD  # zero pixels after normalisation are -mean/std
        return F.grid_sample(images + background, grid, align_corners=False, padding_mode="zeros") - background
