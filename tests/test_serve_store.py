"""The service and its prediction log, in-process (TestClient): what a log that cannot be reached does to each
route, and the A/B verdict as GET /ab shows it. tests/test_serve_loop.py runs the log behind real servers."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from helpers import png_bytes, postgres_server, scribbles, tiny_run
from mnist_lightning.inference.model import LoadedModel
from mnist_lightning.serving.app import create_app
from mnist_lightning.serving.settings import ServeSettings
from mnist_lightning.store.log import PredictionLog


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> LoadedModel:
    return LoadedModel.load(tiny_run(tmp_path_factory.mktemp("main"), seed=0))


def test_a_log_that_cannot_be_reached_gets_503_with_a_detail_and_never_a_500(model):
    digit = {"file": ("d.png", png_bytes(scribbles(1)[0]))}
    with postgres_server() as url:
        client = TestClient(create_app(model, ServeSettings(store={"url": url})), raise_server_exceptions=False)
        answered = client.post("/predict", files=digit)
        assert answered.status_code == 200
    # the server is gone: nothing is answered that the log does not hold, and every route says why
    for method, path, arguments in [
        ("post", "/predict", {"files": digit}),
        ("post", "/predict/batch", {"files": [("files", digit["file"])]}),
        ("post", "/feedback", {"json": {"request_id": answered.json()["request_id"], "label": 3}}),
        ("get", "/ab", {}),
        ("get", "/monitoring", {}),
    ]:
        response = getattr(client, method)(path, **arguments)
        assert response.status_code == 503, (path, response.text)
        assert "the prediction log cannot be reached" in response.json()["detail"], path
        assert response.headers["retry-after"] == "5"
    metrics = client.get("/metrics")  # the counters are still there, and say the log is down
    assert metrics.status_code == 200 and "mnist_store_available 0.0" in metrics.text
    assert 'mnist_http_requests_total{route="/predict",status="503"} 1.0' in metrics.text
    assert client.get("/health").status_code == 200


def test_ab_shows_the_verdict_once_the_first_look_has_its_labels(model, tmp_path):
    candidate = LoadedModel.load(tiny_run(tmp_path / "candidate", seed=1))
    settings = ServeSettings(ab={"fraction": 0.5, "first_look": 10}, store={"url": f"sqlite:///{tmp_path}/s.db"})
    client = TestClient(create_app(model, settings, candidate))
    images = [png_bytes(drawn) for drawn in scribbles(60, seed=3)]
    labels = {model.version: 0, candidate.version: 0}
    for n, data in enumerate(images):
        body = client.post("/predict", files={"file": ("d.png", data)}, headers={"X-Client-Id": f"u{n}"}).json()
        # the candidate is always right, the main model always wrong: a verdict at the first look
        right = body["model_version"] == candidate.version
        label = body["prediction"] if right else (body["prediction"] + 1) % 10
        assert client.post("/feedback", json={"request_id": body["request_id"], "label": label}).status_code == 200
        labels[body["model_version"]] += 1
    report = client.get("/ab").json()
    assert min(labels.values()) >= 10, labels
    decision = report["decision"]
    assert decision["verdict"] == "candidate better" and decision["look"] == 1
    assert decision["labels"] == {"main": 10, "candidate": 10} and decision["difference"] == 1.0
    assert decision["p_value"] < 0.025 and decision["confidence"] == 0.975
    assert 0 < decision["interval"][0] < decision["interval"][1] <= 1
    # the same log read by another process (a second worker, a restart) gives the same report
    again = TestClient(create_app(model, settings, candidate, PredictionLog(settings.store.url)))
    assert again.get("/ab").json() == report
