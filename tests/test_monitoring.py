"""Drift monitoring on a real server: the reference that `python -m mnist_lightning.export` wrote, against real
held-out and changed MNIST digits, with another checkpoint as A/B candidate (ab.candidate=FILE). Routing,
feedback and every monitoring answer are checked in-process, faster, in test_serve_app.py."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

import renderings
from helpers import start_server, stop_server
from mnist_lightning.data.files import load_split
from mnist_lightning.inference import statistics
from mnist_lightning.runs import lineage
from mnist_lightning.serving.ab import hashed_share

pytestmark = pytest.mark.slow  # a server with two models

FRACTION = 0.2
SALT = "monitoring-test"


@pytest.fixture(scope="module")
def server(exported, mnist_dir, tmp_path_factory):
    _, checkpoint, _, _ = exported
    candidate = next(checkpoint.parent.glob("epoch_00-*.ckpt"))  # the same run one epoch earlier: other weights
    handle = start_server(
        tmp_path_factory.mktemp("ab"),
        mnist_dir,
        f"ckpt_path={checkpoint}",
        f"ab.candidate={candidate}",
        f"ab.fraction={FRACTION}",
        f"ab.salt={SALT}",
    )
    handle.candidate_file = candidate
    handle.main, handle.candidate = (httpx.get(f"{handle.url}/ab").json()[k] for k in ("main", "candidate"))
    yield handle
    stop_server(handle)


@pytest.fixture(scope="module")
def test_split(mnist_dir):
    images, labels = load_split(mnist_dir, train=False)
    return images.numpy(), labels.numpy()


def png(array: np.ndarray) -> bytes:
    return renderings.encode(Image.fromarray(array.astype(np.uint8)), "PNG")


def test_the_candidate_given_as_a_checkpoint_file_is_served_beside_the_main_model(server, exported):
    _, checkpoint, _, _ = exported
    assert server.main == lineage.sha256sum(checkpoint)[:12]
    assert server.candidate == lineage.sha256sum(server.candidate_file)[:12] != server.main
    assert f"A/B: 20% of clients get candidate {server.candidate}" in server.log()


def main_client() -> str:
    """A client id that the hash sends to the main model."""
    return next(f"probe-{i}" for i in range(1000) if hashed_share(f"probe-{i}", SALT) >= FRACTION)


def send(server, arrays: list[np.ndarray]) -> None:
    """Every image to the main model, 50 to a request."""
    for start in range(0, len(arrays), 50):
        files = [("files", (f"{i}.png", png(a))) for i, a in enumerate(arrays[start : start + 50])]
        response = httpx.post(f"{server.url}/predict/batch", files=files, headers={"X-Client-Id": main_client()})
        assert response.status_code == 200


def main_report(server) -> dict:
    report = httpx.get(f"{server.url}/monitoring").json()
    assert report["window"] == 500 and report["thresholds"] == {"warn": 0.1, "alert": 0.25}
    (main,) = [m for m in report["models"] if m["role"] == "main"]
    assert main["status"] == report["status"]
    return main


def scribbles(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    drawn = []
    for _ in range(count):
        image = Image.new("L", (28, 28), 0)
        pen = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 6))):
            pen.line([tuple(rng.integers(0, 28, 2)), tuple(rng.integers(0, 28, 2))], fill=255, width=2)
        drawn.append(np.asarray(image))
    return drawn


def test_drift_is_ok_for_held_out_digits_and_alerts_for_changed_inputs(server, test_split):
    """Each stream is 500 images, the window's size: it replaces what the monitor saw before."""
    images, labels = test_split
    held_out = np.random.default_rng(0).permutation(len(images))[:500]  # from all over: the halves differ
    send(server, list(images[held_out]))
    held_out = main_report(server)
    assert held_out["samples"] == 500 and held_out["status"] == "ok", held_out["psi"]
    assert set(held_out["psi"]) == {*statistics.INPUT_STATISTICS, *statistics.OUTPUT_STATISTICS}

    streams = {
        "rotated by 90 degrees": [np.rot90(image) for image in images[2500:3000]],
        "only ones": list(images[labels == 1][:500]),
        "random scribbles": scribbles(500),
    }
    for what, stream in streams.items():
        send(server, stream)
        report = main_report(server)
        assert report["status"] == "alert", (what, report["psi"])
        assert max(report["psi"].values()) >= 0.25, what
    metrics = httpx.get(f"{server.url}/metrics").text
    gauge = re.search(
        rf'mnist_drift_psi{{model_version="{server.main}",statistic="predicted_class"}} ([\d.e+-]+)', metrics
    )
    assert gauge and float(gauge.group(1)) > 0
