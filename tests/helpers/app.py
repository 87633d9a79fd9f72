"""The service in-process (FastAPI's TestClient, no port, no subprocess): small untrained networks saved as
training runs leave their checkpoints, and digit-like images to send them. No training, no MNIST files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import renderings
from mnist_lightning.inference import statistics
from mnist_lightning.models import build_network
from mnist_lightning.runs import layout, lineage, model_json

TINY_NET = {"arch": "mlp", "hidden": [16], "dropout": 0.2}


def tiny_run(run_dir: Path, seed: int) -> Path:
    """The checkpoint of an untrained 16-wide perceptron in `run_dir`/checkpoints/, beside a metrics.json: what
    loading reads of a training checkpoint (the network's description under hyper_parameters.net, its weights
    under state_dict with the prefix `net.`, see models/checkpoint.py) and nothing else."""
    torch.manual_seed(seed)
    network = build_network(**TINY_NET)
    checkpoint = run_dir / layout.CHECKPOINT_DIR / "epoch_00-step_1.ckpt"
    checkpoint.parent.mkdir(parents=True)
    weights = {f"net.{name}": value for name, value in network.state_dict().items()}
    torch.save({"hyper_parameters": {"net": TINY_NET}, "state_dict": weights}, checkpoint)
    layout.write_metrics(run_dir, {"state": "finished", "test/acc": 0.1})
    return checkpoint


def write_reference(checkpoint: Path, images: list[Image.Image]) -> None:
    """An export folder whose model.json holds only a drift reference: `images` as this checkpoint's model
    answers them. Requests with the same images then drift by nothing."""
    from mnist_lightning.inference.model import LoadedModel

    answers = [(result, digit) for result, digit in LoadedModel.load(checkpoint).classify(images) if digit is not None]
    reference = statistics.reference(
        [digit for _, digit in answers],
        np.array([result["prediction"] for result, _ in answers]),
        np.array([result["confidence"] for result, _ in answers]),
    )
    folder = model_json.default_dir(checkpoint)
    folder.mkdir(parents=True)
    meta = {"format": model_json.FORMAT, "checkpoint_sha256": lineage.sha256sum(checkpoint)}
    (folder / model_json.META_FILE).write_text(json.dumps({**meta, "reference": {"statistics": reference}}))


def scribbles(count: int, seed: int = 0) -> list[Image.Image]:
    """Light random strokes on black, 28x28: digit-like enough to be prepared as digits."""
    rng = np.random.default_rng(seed)
    drawn = []
    for _ in range(count):
        image = Image.new("L", (28, 28), 0)
        pen = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 6))):
            pen.line([tuple(rng.integers(2, 26, 2)), tuple(rng.integers(2, 26, 2))], fill=255, width=2)
        drawn.append(image)
    return drawn


def png_bytes(image: Image.Image) -> bytes:
    return renderings.encode(image, "PNG")


def serve_config(*overrides: str):
    """conf/serve.yaml as the serve verb reads it, outputs under ./outputs, with `key=value` overrides."""
    from omegaconf import OmegaConf

    from helpers.paths import CONF_DIR

    paths = OmegaConf.create({"paths": {"outputs_root": "outputs"}})
    return OmegaConf.merge(paths, OmegaConf.load(CONF_DIR / "serve.yaml"), OmegaConf.from_dotlist(list(overrides)))
