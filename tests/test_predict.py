"""Predictions on realistic renderings of real test digits, and a batch full of bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import renderings as examples
from helpers import hostile_images, run_cli
from mnist_lightning.data.files import load_split
from mnist_lightning.data.transforms import normalize
from mnist_lightning.inference import preprocess
from mnist_lightning.models.checkpoint import load_network
from mnist_lightning.runs import layout

pytestmark = pytest.mark.slow  # needs the trained model of the shared training run


@pytest.fixture(scope="module")
def network(trained):
    _, run_dir, _ = trained
    return load_network(run_dir / layout.read_metrics(run_dir)["best_checkpoint"])


@pytest.mark.parametrize("variant", list(examples.variants(np.zeros((28, 28), np.uint8))))
def test_trained_model_reads_most_renderings(variant, network, mnist_dir, tmp_path):
    images, labels = load_split(mnist_dir, train=False)
    inputs = []
    for i, image in enumerate(images[:40].numpy()):
        suffix, content = examples.variants(image)[variant]
        path = tmp_path / f"{i}{suffix}"
        path.write_bytes(content)
        inputs.append(preprocess.prepare(preprocess.open_image(path)).digit)
    with torch.no_grad():
        predictions = network(normalize(torch.from_numpy(np.stack(inputs)) * 255)).argmax(1)
    agreement = (predictions == labels[:40]).float().mean().item()
    assert agreement >= 0.85, f"{variant}: {agreement:.0%}"


def test_cli_batch_with_bad_inputs_predicts_the_rest(trained, mnist_dir, tmp_path):
    cwd, _, _ = trained
    images, labels = load_split(mnist_dir, train=False)
    folder = tmp_path / "batch"
    folder.mkdir()
    for i in range(3):
        (folder / f"good_{i}.png").write_bytes(examples.variants(images[i].numpy())["paper"][1])
    (folder / "text.png").write_text("this is not an image")
    (folder / "truncated.jpg").write_bytes(examples.variants(images[0].numpy())["paper"][1][:300])
    (folder / "blank.png").write_bytes(examples.encode(Image.new("L", (64, 64), 255), "PNG"))
    (folder / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')  # not a type predict reads
    (folder / ".DS_Store").write_bytes(b"\0")  # hidden: not the user's image
    crafted = hostile_images()  # once a traceback, and nothing written for the good images either
    (folder / "nan.tif").write_bytes(crafted["nan.tif"][0])
    (folder / "icon.png").write_bytes(crafted["bomb.ico"][0])  # an ICO wrapping a 12000x12000 PNG
    from test_preprocess import huge_png

    (folder / "huge.png").write_bytes(huge_png(20000, 20000))
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "preds.jsonl"
    result = run_cli(
        "mnist_lightning.predict",
        f"image=[{folder},{tmp_path / 'missing.png'},{empty}]",
        f"predictions_file={out}",
        cwd=cwd,
        data_dir=mnist_dir,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.read_text().splitlines())}
    for i in range(3):
        record = records[f"good_{i}.png"]
        assert record["prediction"] == labels[i].item()
        assert len(record["probabilities"]) == 10 and sum(record["probabilities"]) == pytest.approx(1, abs=1e-4)
        assert record["confidence"] == max(record["probabilities"])
    assert "not a readable image" in records["text.png"]["error"]
    assert "not a readable image" in records["truncated.jpg"]["error"]
    assert "no digit found" in records["blank.png"]["error"]
    assert "decompression bomb" in records["huge.png"]["error"]
    assert "holds NaN or infinite values" in records["nan.tif"]["error"]
    assert "not a readable image" in records["icon.png"]["error"]
    assert "no such file or folder" in records["missing.png"]["error"]
    assert "the folder has no images" in records["empty"]["error"]
    assert "skipped, .svg is not an image type predict reads" in records["drawing.svg"]["error"]
    assert ".DS_Store" not in records
    (predict_dir,) = [d for d in (cwd / "outputs" / "predict").glob("*/*") if list(d.glob("*good_*.png"))]
    assert len(list(predict_dir.glob("*good_*.png"))) == 3  # one picture per predicted image
    assert "drawing.svg" in result.stdout  # the table names it, so the user knows it was not predicted
    assert "3 of 9 images predicted (3 other inputs skipped or not found)" in result.stdout
    assert "Traceback" not in result.stderr


def test_cli_exits_non_zero_when_nothing_could_be_predicted(trained, mnist_dir, tmp_path):
    cwd, _, _ = trained
    (tmp_path / "bad.png").write_text("nope")
    result = run_cli(
        "mnist_lightning.predict",
        f"image={tmp_path / 'bad.png'}",
        "visualize=false",
        cwd=cwd,
        data_dir=mnist_dir,
        timeout=120,
    )
    assert result.returncode == 2
    assert "bad.png: not a readable image" in result.stdout  # the table, as for a batch
    assert "No image could be predicted: " in result.stderr and "bad.png: not a readable image" in result.stderr
    # nothing to open at all: one line before the model is loaded
    nothing = run_cli(
        "mnist_lightning.predict", f"image={tmp_path / 'nope.png'}", cwd=cwd, data_dir=mnist_dir, timeout=120
    )
    assert nothing.returncode == 2 and "Traceback" not in nothing.stderr
    assert f"no image to predict: {tmp_path / 'nope.png'}: no such file or folder" in nothing.stderr


def test_cli_without_image_argument_explains(trained, mnist_dir):
    cwd, _, _ = trained
    result = run_cli("mnist_lightning.predict", cwd=cwd, data_dir=mnist_dir, timeout=120)
    assert result.returncode == 2 and "image=PATH is required" in result.stderr


def test_predict_cli_does_not_import_lightning(trained, mnist_dir, tmp_path):
    cwd, _, _ = trained
    images, _ = load_split(mnist_dir, train=False)
    path = tmp_path / "one.png"
    path.write_bytes(examples.variants(images[0].numpy())["mnist"][1])
    code = (
        "import sys, runpy; sys.argv = ['predict', 'image=" + str(path) + "', 'visualize=false']\n"
        "try:\n    runpy.run_module('mnist_lightning.predict', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('IMPORTED', sorted(m for m in ('lightning', 'matplotlib', 'torchmetrics') if m in sys.modules))"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120).stdout
    assert "IMPORTED []" in out
