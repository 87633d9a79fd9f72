"""The whole production loop, end to end, with the real commands: a champion that is weak at one style of digit
(MNIST's test digits turned by 60 degrees) serves them and gets their labels back; retrain fine-tunes it on that
feedback and registers a challenger; the challenger is served as the A/B candidate, /ab decides, promote promotes.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from helpers import png_bytes, run_cli, start_server, stop_server
from mnist_lightning.data.files import load_split

pytestmark = pytest.mark.slow
ANGLE = 60
UNLIMITED = ("limits.requests_per_minute=0", "limits.feedback_per_hour=0")


def turned(images, labels, indices) -> list[tuple[bytes, int]]:
    """MNIST digits turned by ANGLE degrees, as PNG files, with their labels."""
    found = []
    for index in indices:
        image = Image.fromarray(images[index].numpy()).rotate(ANGLE, resample=Image.BILINEAR, expand=True)
        found.append((png_bytes(image), int(labels[index])))
    return found


def send_and_label(url: str, digits: list[tuple[bytes, int]]) -> dict[str, list[bool]]:
    """Each digit predicted (client ids spread over the A/B arms) and labelled; right or wrong, per model."""
    right: dict[str, list[bool]] = {}
    with httpx.Client(base_url=url, timeout=30) as http:
        for n, (data, label) in enumerate(digits):
            answer = http.post("/predict", files={"file": ("d.png", data)}, headers={"X-Client-Id": f"user-{n}"})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert http.post("/feedback", json={"request_id": body["request_id"], "label": label}).status_code == 200
            right.setdefault(body["model_version"], []).append(body["prediction"] == label)
    return right


def test_feedback_on_a_weak_style_retrains_a_challenger_that_ab_and_promote_put_in_charge(trained, mnist_dir, tmp_path):
    _, run_dir, _ = trained
    champion = next((run_dir / "checkpoints").glob("epoch_01-*.ckpt"))
    project = tmp_path / "project"
    project.mkdir()
    filed = run_cli(
        "mnist_lightning.register", f"ckpt_path={champion}", "export=false", cwd=project, data_dir=mnist_dir
    )
    assert filed.returncode == 0, filed.stderr[-3000:]
    images, labels = load_split(mnist_dir, train=False)

    # 1. the champion serves the turned digits, and users send their labels back
    server = start_server(project, mnist_dir, "model_ref=registry:mnist-cnn@champion", *UNLIMITED)
    try:
        (before,) = send_and_label(server.url, turned(images, labels, range(0, 600))).values()
    finally:
        stop_server(server)
    weak = sum(before) / len(before)
    assert weak < 0.8, f"the champion should be weak at turned digits: {weak:.2%}"

    # 2. retrain on that feedback: a challenger, measured against its parent
    retrained = run_cli(
        "mnist_lightning.retrain",
        "trainer.limit_train_batches=150",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        cwd=project,
        data_dir=mnist_dir,
    )
    assert retrained.returncode == 0, retrained.stderr[-5000:]
    assert "alias challenger" in retrained.stderr and "held-out labelled answers" in retrained.stderr
    (metrics_path,) = [p for p in project.glob("outputs/*/*/metrics.json") if "feedback_dataset" in p.read_text()]
    metrics = json.loads(metrics_path.read_text())
    scores = metrics["comparison"]
    assert scores["retrained"]["feedback_holdout"] >= scores["parent"]["feedback_holdout"] + 0.15, scores
    assert metrics["mnist_drop_points"] <= 0.5 and metrics["registered"]["version"] == 2, scores
    dataset = Path(metrics["feedback_dataset"]["path"])
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert sum(manifest["counts"].values()) == 600 and manifest["hash"] == metrics["feedback_dataset"]["hash"]
    assert metrics["parent"]["model_version"] and metrics["data_md5"], metrics.keys()

    # 3. the challenger as the A/B candidate on new turned digits: a verdict
    server = start_server(
        project,
        mnist_dir,
        "model_ref=registry:mnist-cnn@champion",
        "ab.candidate=registry:mnist-cnn@challenger",
        "ab.fraction=0.5",
        *UNLIMITED,
    )
    try:
        send_and_label(server.url, turned(images, labels, range(5000, 5300)))
        decision = httpx.get(f"{server.url}/ab").json()["decision"]
    finally:
        stop_server(server)
    assert decision["verdict"] == "candidate better", decision

    # 4. promote follows the verdict
    promoted = run_cli("mnist_lightning.promote", cwd=project, data_dir=mnist_dir)
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    assert "promoted        mnist-cnn v2" in promoted.stderr and "candidate better" in promoted.stderr
