"""MNIST held in memory as uint8 tensors; batches are built by indexing and normalised on the device."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mnist_lightning import data
from mnist_lightning.data import normalize
from mnist_lightning.errors import DataError, UserError


class InMemoryMNIST(Dataset):
    """Indexed by a tensor of indices, returns a whole batch: (images uint8 (B, 28, 28), labels (B,))."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: torch.Tensor):
        return self.images[index], self.labels[index]


class BatchIndexSampler:
    """Yields one index tensor per batch.

    The order of an epoch depends only on (seed, epoch), never on what ran before in this process,
    and with several processes each rank takes a disjoint shard (padded like DistributedSampler).
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1):
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = epoch

    def _shard_size(self) -> int:
        return math.ceil(self.size / self.world_size)

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        if self.world_size > 1:
            padded = self._shard_size() * self.world_size
            order = torch.cat([order, order[: padded - self.size]])[self.rank :: self.world_size]
        yield from order[: len(self) * self.batch_size if self.drop_last else None].split(self.batch_size)


class MNISTDataModule(pl.LightningDataModule):
    """The MNIST split: 55,000 train / 5,000 val (fixed by `split_seed`) and the 10,000 test images."""

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 12345,
        seed: int = 42,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        augment: dict | None = None,
        shuffle: bool = True,
        download: bool = True,
        files: dict[str, data.FileSpec] | None = None,
    ):
        super().__init__()
        for name, value, low in (("batch_size", batch_size, 1), ("eval_batch_size", eval_batch_size, 1),
                                 ("val_size", val_size, 1), ("num_workers", num_workers, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
        self.data_dir = Path(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.seed = val_size, split_seed, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.augment = RandomAffine(**augment) if augment else None
        self.shuffle = shuffle
        self.download = download
        self.files = files or data.MNIST_FILES
        self.file_md5: dict[str, str] = {}
        self.train_set = self.val_set = self.test_set = None

    def prepare_data(self) -> None:
        missing = data.missing_files(self.data_dir, self.files)
        if missing and not self.download:
            fix = data.how_to_fix(self.data_dir, self.files)
            raise DataError(f"MNIST files {', '.join(missing)} are missing and data.download=false. {fix}")
        if missing:
            data.download(self.data_dir, self.files)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.file_md5 = data.verify_files(self.data_dir, self.files)
        images, labels = data.load_split(self.data_dir, train=True, files=self.files)
        if self.val_size >= len(images):
            raise DataError(
                f"data.val_size={self.val_size} leaves no training images: the training file has {len(images)}. "
                f"Choose a value below {len(images)}."
            )
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed))
        train_idx, val_idx = order[: len(images) - self.val_size], order[len(images) - self.val_size :]
        self.train_set = InMemoryMNIST(images[train_idx], labels[train_idx])
        self.val_set = InMemoryMNIST(images[val_idx], labels[val_idx])
        self.test_set = InMemoryMNIST(*data.load_split(self.data_dir, train=False, files=self.files))

    def _loader(self, dataset: InMemoryMNIST, batch_size: int, shuffle: bool) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        if trainer is not None and trainer.overfit_batches > 0:
            # Lightning would replace the batch sampler with a per-sample one
            raise UserError("trainer.overfit_batches does not work with the in-memory batches: use debug=overfit "
                            "(trainer.limit_train_batches=N with data.shuffle=false)")
        sampler = BatchIndexSampler(len(dataset), batch_size, shuffle, seed=self.seed, rank=rank, world_size=world)
        pin = self.pin_memory
        if pin is None:  # auto: pinned host memory only helps copies to a GPU
            pin = trainer is not None and trainer.strategy.root_device.type == "cuda"
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=self.num_workers,
                          pin_memory=pin, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        images = normalize(images)
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images = self.augment(images, seed=(self.seed, self.trainer.current_epoch, self.trainer.global_step))
        return images, labels


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
        background = data.MNIST_MEAN / data.MNIST_STD  # zero pixels after normalisation are -mean/std
        return F.grid_sample(images + background, grid, align_corners=False, padding_mode="zeros") - background
