"""Feedback datasets (data/feedback.py): versioned folders of labelled answers, and the datamodule reading one."""

from __future__ import annotations

import json
import random
import uuid

import numpy as np
import pytest

from mnist_lightning.data import feedback
from mnist_lightning.data.datamodule import MNISTDataModule
from mnist_lightning.errors import DataError


def rows(count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "request_id": uuid.UUID(int=int(rng.integers(2**62))).hex,
            "input": rng.integers(0, 256, 784, dtype=np.uint8).tobytes(),
            "label": int(rng.integers(10)),
        }
        for _ in range(count)
    ]


def test_the_same_answers_give_the_same_dataset_whatever_their_order(tmp_path):
    answers = rows(300)
    folder = feedback.write_dataset(answers, tmp_path / "datasets", holdout=0.2, source="sqlite:///x.db")
    shuffled = random.Random(1).sample(answers, len(answers))
    assert feedback.write_dataset(shuffled, tmp_path / "elsewhere", holdout=0.2).name == folder.name
    manifest = json.loads((folder / "manifest.json").read_text())
    assert folder.name == f"feedback-{manifest['hash'][:12]}" and manifest["source"] == "sqlite:///x.db"
    assert sum(manifest["counts"].values()) == 300 and 30 < manifest["counts"]["holdout"] < 90
    images, labels, md5 = feedback.load_dataset(folder, "train")
    assert images.shape == (manifest["counts"]["train"], 28, 28) and labels.dtype.is_floating_point is False
    assert set(md5.values()) <= set(manifest["files"].values())
    # an answer stays on its side when more answers come: the split is fixed by its request id
    grown = feedback.write_dataset(answers + rows(100, seed=1), tmp_path / "datasets", holdout=0.2)
    held = set(json.loads((folder / "holdout-request-ids.json").read_text()))
    assert held <= set(json.loads((grown / "holdout-request-ids.json").read_text())) and grown != folder
    by_id = {row["request_id"]: row for row in answers}
    train_ids = json.loads((folder / "train-request-ids.json").read_text())
    assert [by_id[i]["label"] for i in train_ids] == labels.tolist()
    assert bytes(images[0].numpy().tobytes()) == by_id[train_ids[0]]["input"]


def test_a_changed_file_is_refused_naming_it(tmp_path):
    folder = feedback.write_dataset(rows(50), tmp_path, holdout=0.2)
    (folder / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: md5 .* the dataset was changed"):
        feedback.load_dataset(folder, "train")
    with pytest.raises(DataError, match="is not a feedback dataset"):
        feedback.load_dataset(tmp_path / "nothing", "train")


def test_the_datamodule_mixes_the_feedback_into_training_at_its_share(tiny_mnist, tmp_path):
    data_dir, files = tiny_mnist
    folder = feedback.write_dataset(rows(40), tmp_path / "datasets", holdout=0.25)
    plain = MNISTDataModule(data_dir=str(data_dir), val_size=100, files=files, download=False)
    plain.setup("fit")
    mixed = MNISTDataModule(
        data_dir=str(data_dir), val_size=100, files=files, download=False, feedback=str(folder), feedback_share=0.2
    )
    mixed.setup("fit")
    own = feedback.read_manifest(folder)["counts"]["train"]
    added = len(mixed.train_set) - len(plain.train_set)
    assert added % own == 0 and abs(added / len(mixed.train_set) - 0.2) < 0.05, (added, own)
    assert len(mixed.val_set) == len(plain.val_set) == 100  # validation stays MNIST's
    assert any(name.startswith(folder.name) for name in mixed.file_md5)  # the feedback files are in the lineage
    with pytest.raises(ValueError, match="feedback_share=1.5: must be between 0 and 1"):
        MNISTDataModule(data_dir=str(data_dir), feedback=str(folder), feedback_share=1.5)
