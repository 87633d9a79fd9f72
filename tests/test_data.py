"""The MNIST files and the datamodule, on tiny IDX files written here and on the real data."""

from unittest import mock

import pytest
import torch

from mnist_lightning.data import files as data
from mnist_lightning.data.datamodule import BatchIndexSampler, MNISTDataModule
from mnist_lightning.data.transforms import MNIST_MEAN, MNIST_STD, RandomAffine, normalize
from mnist_lightning.errors import DataError


def test_verify_accepts_the_expected_files_and_reads_them(tiny_mnist):
    root, files = tiny_mnist
    sums = data.verify_files(root, files)
    assert sums == {spec.name: spec.md5 for spec in files.values()}
    images, labels = data.load_split(root, train=True, files=files)
    assert images.shape == (300, 28, 28) and images.dtype == torch.uint8
    assert labels.tolist() == [i % 10 for i in range(300)]


def test_truncated_file_is_named(tiny_mnist):
    root, files = tiny_mnist
    path = data.raw_dir(root) / files["train_images"].name
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte has .* bytes, expected"):
        data.verify_files(root, files)


def test_corrupted_file_is_named(tiny_mnist):
    root, files = tiny_mnist
    path = data.raw_dir(root) / files["test_labels"].name
    content = bytearray(path.read_bytes())
    content[-1] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte is corrupted: md5"):
        data.verify_files(root, files)


def test_not_an_idx_file_is_refused(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"PK\x03\x04 not idx at all")
    with pytest.raises(DataError, match="not an IDX file"):
        data.read_idx(bad, ndim=3)


def test_missing_files_without_download_name_files_folder_and_override(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path / "nothing"), download=False)
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    message = str(err.value)
    for spec in data.MNIST_FILES.values():
        assert spec.name in message
    assert str(tmp_path / "nothing" / "MNIST" / "raw") in message and "data.data_dir=" in message


def test_failed_download_is_one_clear_error(tmp_path):
    from urllib.error import URLError

    with mock.patch("torchvision.datasets.MNIST", side_effect=URLError("no network")):
        with pytest.raises(DataError, match="Could not download MNIST.*no network.*data.data_dir="):
            MNISTDataModule(data_dir=str(tmp_path / "empty")).prepare_data()


def test_present_files_are_used_without_download_or_writes(tiny_mnist):
    root, files = tiny_mnist
    with mock.patch("mnist_lightning.data.files.download") as download:
        dm = MNISTDataModule(data_dir=str(root), files=files, val_size=50)
        dm.prepare_data()
        dm.setup("fit")
    download.assert_not_called()


def test_split_sizes_and_determinism(tiny_mnist):
    root, files = tiny_mnist

    def split(**kwargs):
        dm = MNISTDataModule(data_dir=str(root), files=files, val_size=50, **kwargs)
        dm.setup()
        return dm

    a, b, other_seed, other_split = split(seed=1), split(seed=2), split(seed=3), split(split_seed=7)
    assert (len(a.train_set), len(a.val_set), len(a.test_set)) == (250, 50, 100)
    assert torch.equal(a.val_set.images, b.val_set.images)
    assert torch.equal(a.train_set.labels, other_seed.train_set.labels)
    assert not torch.equal(a.val_set.images, other_split.val_set.images)
    # train and val together are exactly the training file
    together = torch.cat([a.train_set.images, a.val_set.images]).flatten(1)
    original = data.load_split(root, True, files)[0].flatten(1)
    assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, original.tolist()))


def test_val_split_larger_than_data_is_refused(tiny_mnist):
    root, files = tiny_mnist
    with pytest.raises(DataError, match="data.val_size=300 leaves no training images"):
        MNISTDataModule(data_dir=str(root), files=files, val_size=300).setup()


@pytest.mark.parametrize("key,value", [("batch_size", 0), ("batch_size", "64"), ("val_size", -1), ("num_workers", -2)])
def test_bad_arguments_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"{key}="):
        MNISTDataModule(**{key: value})


def test_batches_are_indexed_from_memory_and_normalised(tiny_mnist):
    root, files = tiny_mnist
    dm = MNISTDataModule(data_dir=str(root), files=files, val_size=50, batch_size=32)
    dm.setup()
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (32, 28, 28) and labels.shape == (32,)
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    expected = (images.float() / 255 - MNIST_MEAN) / MNIST_STD
    assert torch.allclose(x[:, 0], expected, atol=1e-5)
    assert len(dm.train_dataloader()) == 8  # ceil(250 / 32)


def test_normalised_real_training_set_has_zero_mean_unit_std(mnist_dir):
    images, _ = data.load_split(mnist_dir, train=True)
    x = normalize(images)
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3


def test_sampler_order_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        sampler = BatchIndexSampler(100, 10, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return torch.cat(list(sampler)).tolist()

    assert order(1, 3) == order(1, 3)
    assert order(1, 3) != order(1, 4) and order(1, 3) != order(2, 3)
    assert sorted(order(1, 3)) == list(range(100))


def test_sampler_shards_are_disjoint_and_cover_everything():
    shards = []
    for rank in range(3):
        sampler = BatchIndexSampler(100, 8, shuffle=True, seed=0, rank=rank, world_size=3)
        sampler.set_epoch(2)
        shard = torch.cat(list(sampler)).tolist()
        assert len(sampler) == len(list(sampler)) == 5  # ceil(ceil(100 / 3) / 8)
        shards.append(shard)
    flat = [i for shard in shards for i in shard]
    assert len(flat) == 102 and set(flat) == set(range(100))  # two padded repeats, like DistributedSampler


def test_sampler_drop_last():
    sampler = BatchIndexSampler(25, 10, shuffle=False, drop_last=True)
    assert [len(b) for b in sampler] == [10, 10] and len(sampler) == 2


def test_augmentation_keeps_shape_and_identity_parameters_change_nothing():
    x = normalize(torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8))
    identity = RandomAffine(degrees=0, translate=0, scale=(1, 1))(x, seed=(0,))
    assert torch.allclose(identity, x, atol=1e-4)
    moved = RandomAffine(degrees=15, translate=0.1, scale=(0.9, 1.1))(x, seed=(0,))
    assert moved.shape == x.shape and not torch.allclose(moved, x, atol=1e-2)
    assert torch.equal(moved, RandomAffine(degrees=15, translate=0.1, scale=(0.9, 1.1))(x, seed=(0,)))


def test_augmentation_only_touches_training_batches(tiny_mnist):
    root, files = tiny_mnist
    dm = MNISTDataModule(data_dir=str(root), files=files, val_size=50, augment={"degrees": 20})
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    dm.trainer = mock.Mock(training=False)
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], normalize(batch[0]))
    dm.trainer = mock.Mock(training=True, current_epoch=0, global_step=0)
    assert not torch.equal(dm.on_after_batch_transfer(batch, 0)[0], normalize(batch[0]))


def test_worker_processes_build_the_same_batches(tiny_mnist):
    root, files = tiny_mnist

    def batches(workers):
        dm = MNISTDataModule(data_dir=str(root), files=files, val_size=50, batch_size=40, num_workers=workers)
        dm.setup()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        return [labels.tolist() for _, labels in loader]

    assert batches(2) == batches(0)


def test_sampler_resumes_mid_epoch_with_the_remaining_batches_only():
    def batches(resume=None, epoch=1):
        sampler = BatchIndexSampler(100, 8, shuffle=True, seed=5)
        if resume:
            sampler.resume_at(*resume)
        sampler.set_epoch(epoch)
        return [b.tolist() for b in sampler]

    full = batches()
    assert batches(resume=(1, 5 * 8)) == full[5:]  # the positions of 5 batches of 8
    assert batches(resume=(0, 5 * 8)) == full  # a position saved in another epoch does not apply


def test_sampler_resumes_on_another_number_of_ranks_where_the_ranks_stopped():
    def sampler(rank, world, size=96):
        made = BatchIndexSampler(size, 8, shuffle=True, seed=5, rank=rank, world_size=world)
        made.set_epoch(1)
        return made

    def batches(rank, world, positions=None):
        made = sampler(rank, world)
        if positions is not None:
            made.resume_at(1, positions)
        return [b.tolist() for b in made]

    whole = [i for b in batches(0, 1) for i in b]
    # two ranks trained 3 batches each, then the run resumes on one: nothing is seen twice, nothing is left out
    two = sampler(0, 2)
    list(two)
    done = two.positions_done(3)
    assert done == 48
    before = [i for rank in range(2) for b in batches(rank, 2)[:3] for i in b]
    after = [i for b in batches(0, 1, positions=done) for i in b]
    assert sorted(before + after) == list(range(96))
    assert after == whole[48:], "the same order as a run that was never stopped"
    # the new rank counts its epoch as 6 of 12 batches done, so the epoch ends after exactly the batches left
    one = sampler(0, 1)
    assert one.resume_at(1, done) == 6 and len(one) - 6 == len(after) // 8
    # resumed again later in the same epoch: the positions add up across the two resumes
    list(one)
    assert one.positions_done(6 + 2) == 48 + 16
    # one rank's 3 batches resumed on three: every rank gets the same number of batches, the rest is covered
    shards = [batches(rank, 3, positions=24) for rank in range(3)]
    assert len({len(s) for s in shards}) == 1
    assert set(whole[:24]) | {i for s in shards for b in s for i in b} == set(range(96))
    # two ranks' uninterrupted batches b are together the single-process batch b of twice the size
    double = BatchIndexSampler(96, 16, shuffle=True, seed=5)
    double.set_epoch(1)
    pairs = zip(batches(0, 2), batches(1, 2), strict=True)
    assert [sorted(a + b) for a, b in pairs] == [sorted(b.tolist()) for b in double]
