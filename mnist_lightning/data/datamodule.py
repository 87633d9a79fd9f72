"""MNIST held in memory as uint8 tensors; batches are built by indexing and normalised on the device.

The batch path is written by hand: a torchvision dataset yields one PIL image per sample, while here a
batch is one indexing operation, and the sampler can continue an epoch mid-way after a resume.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mnist_lightning.data import feedback as feedback_data
from mnist_lightning.data import files as mnist_files
from mnist_lightning.data.transforms import RandomAffine, normalize
from mnist_lightning.errors import DataError, UserError

log = logging.getLogger(__name__)


class InMemoryMNIST(Dataset):
    """Indexed by a tensor of indices, returns a whole batch: (images uint8 (B, 28, 28), labels (B,))."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: torch.Tensor):
        return self.images[index], self.labels[index]

    def to(self, device: torch.device) -> InMemoryMNIST:
        return InMemoryMNIST(self.images.to(device), self.labels.to(device))


class BatchIndexSampler:
    """Yields one index tensor per batch.

    The order of an epoch depends only on (seed, epoch), never on what ran before in this process,
    and with several processes each rank takes a disjoint shard (padded like DistributedSampler).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None
        self.started_at, self.counted_before = 0, 0  # this iteration's first position, and batches it counts as done

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = epoch

    def resume_at(self, epoch: int, positions_done: int) -> int:
        """Skip the first `positions_done` positions of epoch `epoch`'s order (what every rank together trained on
        before the checkpoint) the next time that epoch is iterated; returns how many of this epoch's batches, in
        the current number of ranks, that counts as (a mid-epoch resume, on as many or other processes)."""
        self._resume = (epoch, positions_done)
        return len(self) - self._remaining_batches(positions_done)

    def shard_size(self) -> int:
        return math.ceil(self.size / self.world_size)

    def __len__(self) -> int:
        n = self.shard_size()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _remaining_batches(self, start: int) -> int:
        rest = max(0, self.shard_size() * self.world_size - start)
        per_rank = math.ceil(rest / self.world_size)
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def positions_done(self, batches_done: int) -> int:
        """Positions of this epoch's order trained on after `batches_done` batches of this iteration's count."""
        if batches_done <= 0:
            return 0
        done = self.started_at + (batches_done - self.counted_before) * self.batch_size * self.world_size
        return max(0, min(done, self.shard_size() * self.world_size))

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        # batch b of rank r holds positions (b * batch_size + i) * world_size + r of the epoch's order: together
        # the ranks' b-th batches are one batch of batch_size * world_size consecutive positions, whatever the
        # number of ranks, so a resume skips the positions done and shards the rest among the ranks it has now
        start = 0
        if self._resume is not None:
            epoch, done = self._resume
            self._resume = None
            start = done if epoch == self.epoch else 0
        self.started_at, self.counted_before = start, len(self) - self._remaining_batches(start) if start else 0
        order = torch.cat([order, order[: self.shard_size() * self.world_size - self.size]])[start:]
        order = torch.cat([order, order[: -len(order) % self.world_size]])  # equal shards for every rank
        shard = order[self.rank :: self.world_size]
        if self.drop_last:
            shard = shard[: len(shard) // self.batch_size * self.batch_size]
        yield from shard.split(self.batch_size)


class MNISTDataModule(pl.LightningDataModule):
    """The MNIST split: 55,000 train / 5,000 val (fixed by `split_seed`) and the 10,000 test images; with
    `feedback` (a feedback dataset's folder, as retrain writes it), its training images join the training split."""

    # BatchIndexSampler gives each DDP rank its own shard: the trainer must not swap in a DistributedSampler
    shards_by_rank = True

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        val_size: int = 5000,
        split_seed: int = 12345,
        seed: int = 42,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        on_device: bool | None = None,
        augment: dict | None = None,
        shuffle: bool = True,
        download: bool = True,
        files: dict[str, mnist_files.FileSpec] | None = None,
        feedback: str | None = None,
        feedback_share: float = 0.2,
    ):
        super().__init__()
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size or 1, 1),
            ("val_size", val_size, 1),
            ("num_workers", num_workers, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
        self.data_dir = Path(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.seed = val_size, split_seed, seed
        self.num_workers, self.pin_memory, self.on_device = num_workers, pin_memory, on_device
        self._device_copies: dict[tuple[int, str], InMemoryMNIST] = {}
        self._train_sampler: BatchIndexSampler | None = None
        self._resume_position: dict | None = None
        self.augment = RandomAffine(**augment) if augment else None
        self.shuffle = shuffle
        self.download = download
        self.files = files or mnist_files.MNIST_FILES
        if not 0 < feedback_share < 1:
            raise ValueError(f"feedback_share={feedback_share!r}: must be between 0 and 1 (both excluded)")
        self.feedback, self.feedback_share = feedback, feedback_share
        self.file_md5: dict[str, str] = {}
        self.train_set = self.val_set = self.test_set = None

    def prepare_data(self) -> None:
        missing = mnist_files.missing_files(self.data_dir, self.files)
        if missing and not self.download:
            fix = mnist_files.how_to_fix(self.data_dir, self.files)
            raise DataError(f"MNIST files {', '.join(missing)} are missing and data.download=false. {fix}")
        if missing:
            mnist_files.download(self.data_dir, self.files)

    def setup(self, stage: str | None = None) -> None:
        """Load the splits `stage` needs ("test" reads only the test files; fit/validate/None read all)."""
        names = ("test",) if stage == "test" else ("train", "test")
        wanted = {k: v for k, v in self.files.items() if k.split("_")[0] in names and v.name not in self.file_md5}
        self.file_md5.update(mnist_files.verify_files(self.data_dir, wanted))
        if stage != "test" and self.train_set is None:
            images, labels = mnist_files.load_split(self.data_dir, train=True, files=self.files)
            if self.val_size >= len(images):
                raise DataError(
                    f"data.val_size={self.val_size} leaves no training images: the training file has "
                    f"{len(images)}. Choose a value below {len(images)}."
                )
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed))
            train_idx, val_idx = order[: len(images) - self.val_size], order[len(images) - self.val_size :]
            self.train_set = InMemoryMNIST(images[train_idx], labels[train_idx])
            self.val_set = InMemoryMNIST(images[val_idx], labels[val_idx])
            if self.feedback:
                self.train_set = self._with_feedback(self.train_set)
        if self.test_set is None:
            self.test_set = InMemoryMNIST(*mnist_files.load_split(self.data_dir, train=False, files=self.files))

    def _with_feedback(self, mnist: InMemoryMNIST) -> InMemoryMNIST:
        """MNIST's training split with a feedback dataset's training images (data/feedback.py), repeated so that
        they make about `feedback_share` of every epoch: a few hundred labels would be lost among 55,000 images."""
        images, labels, md5 = feedback_data.load_dataset(self.feedback, "train")
        self.file_md5.update(md5)
        if not len(labels):
            return mnist
        repeats = max(1, round(self.feedback_share * len(mnist) / ((1 - self.feedback_share) * len(labels))))
        return InMemoryMNIST(
            torch.cat([mnist.images, images.repeat(repeats, 1, 1)]), torch.cat([mnist.labels, labels.repeat(repeats)])
        )

    def _loader(self, dataset: InMemoryMNIST, batch_size: int, shuffle: bool, train: bool = False) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        if trainer is not None and trainer.overfit_batches > 0:
            # Lightning would replace the batch sampler with a per-sample one
            raise UserError(
                "trainer.overfit_batches does not work with the in-memory batches: use debug=overfit "
                "(trainer.limit_train_batches=N with data.shuffle=false)"
            )
        sampler = BatchIndexSampler(len(dataset), batch_size, shuffle, seed=self.seed, rank=rank, world_size=world)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        # DataLoader draws a seed for its workers at every iter(); its own generator keeps that draw
        # off the global RNG, whose stream (dropout) must not depend on how many loaders were started
        extra = {"generator": torch.Generator().manual_seed(self.seed)}
        if train:
            self._train_sampler = sampler
            if world > 1:
                log.info(
                    "Rank %d of %d trains on its own shard: %d of the %d training images per epoch, in batches of %d",
                    rank,
                    world,
                    sampler.shard_size(),
                    len(dataset),
                    batch_size,
                )
            if self._resume_position is not None:  # restored from a checkpoint: continue mid-epoch
                position = self._resume_position
                self._resume_position = None
                if "positions_done" in position:
                    positions = position["positions_done"]
                else:  # a checkpoint from before positions were saved: batches of as many ranks as now
                    positions = position["batches_done"] * batch_size * position.get("world_size", world)
                counted = sampler.resume_at(position["epoch"], positions)
                progress = trainer.fit_loop.epoch_loop.batch_progress.current if trainer is not None else None
                if progress is not None and progress.ready != counted:
                    # saved by another number of ranks: Lightning counts this epoch's batches in the new batches,
                    # so that the epoch ends (and validates) after exactly the batches left
                    log.info(
                        "Resuming on %d ranks instead of the checkpoint's: %d batches count as done", world, counted
                    )
                    progress.ready = progress.started = progress.processed = progress.completed = counted
        on_device = self.on_device
        if on_device is None:  # auto: a GPU holds the whole split (43 MB of training images) and indexes batches itself
            on_device = device.type == "cuda" and self.num_workers == 0
        if on_device and device.type != "cpu":
            if self.num_workers:
                raise UserError("data.on_device=true needs data.num_workers=0: workers cannot index GPU tensors")
            key = (id(dataset), str(device))
            if key not in self._device_copies:
                self._device_copies[key] = dataset.to(device)
            return DataLoader(self._device_copies[key], sampler=sampler, batch_size=None, num_workers=0, **extra)
        pin = self.pin_memory
        if pin is None:  # auto: pinned host memory only helps copies to a GPU
            pin = device.type == "cuda"
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=pin,
            persistent_workers=self.num_workers > 0,
            **extra,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=self.shuffle, train=True)

    def state_dict(self) -> dict:
        """Saved in every checkpoint: the position in the training epoch, so a resume continues mid-epoch."""
        if self._train_sampler is None or self.trainer is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        sampler = self._train_sampler
        position = {
            "epoch": sampler.epoch,
            "batches_done": done,
            "world_size": self.trainer.world_size,
            "positions_done": sampler.positions_done(done),  # what a resume on any number of ranks skips
        }
        return {"train_position": position}

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning restores this before it builds the training loader
        self._resume_position = state_dict.get("train_position")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size_for(self._device()), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size_for(self._device()), shuffle=False)

    def eval_batch_size_for(self, device: torch.device | str) -> int:
        """`eval_batch_size`, or when it is None: 1000 on a GPU, 64 on a CPU (whose caches hold a batch of 64's
        activations; measured 1.5-2x faster per image than batches of 1000 on a 2-core CPU)."""
        if self.eval_batch_size:
            return self.eval_batch_size
        return 1000 if torch.device(device).type == "cuda" else 64

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        images = normalize(images)
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images = self.augment(images, seed=(self.seed, self.trainer.current_epoch, self.trainer.global_step))
        return images, labels
