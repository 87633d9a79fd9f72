"""The service's app in-process: every route and every error answer through FastAPI's TestClient, on untrained
16-wide perceptrons saved as training checkpoints here (no training, no port, no MNIST files). What only a real
server shows (body limits on a socket, concurrency, shutdown, the browser) is in test_serve.py, test_monitoring.py
and test_page.py."""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from helpers import ROOT, huge_png, png_bytes, scribbles, serve_config, tiny_run, write_reference
from mnist_lightning.errors import UserError
from mnist_lightning.inference.model import LoadedModel
from mnist_lightning.runs import lineage
from mnist_lightning.serve import service_settings
from mnist_lightning.serving.ab import hashed_share
from mnist_lightning.serving.app import create_app
from mnist_lightning.serving.settings import AB, Auth, Batching, Limits, Monitoring, ServeSettings, Store

EXAMPLE = ROOT / "examples" / "1_paper.jpg"
WINDOW = 30
SALT = "test-salt"
SETTINGS = ServeSettings(ab=AB(fraction=0.5, salt=SALT), monitoring=Monitoring(window=WINDOW, min_samples=10))
# client ids the hash sends to the main model and to the candidate
TO_MAIN = {"X-Client-Id": next(f"c{i}" for i in range(100) if hashed_share(f"c{i}", SALT) >= 0.5)}
TO_CANDIDATE = {"X-Client-Id": next(f"c{i}" for i in range(100) if hashed_share(f"c{i}", SALT) < 0.5)}
ROUTES = {"/predict", "/predict/batch", "/feedback", "/ab", "/health", "/model", "/metrics", "/monitoring"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[LoadedModel, LoadedModel]:
    """(main, candidate): the main one with a drift reference made of scribbles(WINDOW), the candidate without."""
    root = tmp_path_factory.mktemp("served")
    main = tiny_run(root / "main", seed=0)
    write_reference(main, scribbles(WINDOW))
    return LoadedModel.load(main), LoadedModel.load(tiny_run(root / "candidate", seed=1))


@pytest.fixture
def client(models) -> TestClient:
    """A fresh app (its own counters and tallies) serving both models to half the clients each."""
    main, candidate = models
    return TestClient(create_app(main, SETTINGS, candidate))


def image(size: int = 64, colour: int = 255) -> bytes:
    return png_bytes(Image.new("L", (size, size), colour))


def predict(client: TestClient, **arguments) -> dict:
    response = client.post("/predict", **arguments)
    assert response.status_code == 200, response.text
    return response.json()


def test_predict_answers_one_image_with_every_field(client, models):
    main, _ = models
    body = predict(client, files={"file": EXAMPLE.open("rb")}, headers=TO_MAIN)
    assert set(body) == {
        "prediction",
        "confidence",
        "probabilities",
        "inverted",
        "reason",
        "model_version",
        "request_id",
    }
    assert 0 <= body["prediction"] <= 9 and body["confidence"] == max(body["probabilities"])
    assert len(body["probabilities"]) == 10 and sum(body["probabilities"]) == pytest.approx(1, abs=1e-4)
    assert body["inverted"] is True and body["reason"] is None  # dark ink on paper
    assert body["model_version"] == main.version == lineage.sha256sum(main.checkpoint)[:12]
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])


def test_a_blank_image_gets_no_prediction_and_the_reason(client):
    body = predict(client, files={"file": ("blank.png", image())})
    assert body["prediction"] is None and body["confidence"] is None and body["probabilities"] is None
    assert "no digit found" in body["reason"] and body["request_id"]


def chunked(size: int):
    """A multipart body without Content-Length: the size limit counts it as it streams in."""
    yield b'--cut\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    for _ in range(size // 1_000_000):
        yield b"\0" * 1_000_000


BAD_PREDICTIONS = [
    # (what, client.post arguments, status, words the detail must contain)
    ("no file field", {"files": {"image": ("x.png", b"...")}}, 422, "missing form field 'file'"),
    ("an empty body", {}, 422, "missing form field 'file'"),
    ("JSON instead of a form", {"json": {"file": "x"}}, 422, "missing form field 'file'"),
    ("text, not a file (curl -F without @)", {"data": {"file": "digit.png"}}, 422, "body.file: Value error"),
    ("an empty file", {"files": {"file": ("empty.png", b"")}}, 400, "empty.png: empty file"),
    ("not an image", {"files": {"file": ("notes.txt", b"plain text")}}, 400, "notes.txt: not a readable image"),
    ("a truncated image", {"files": {"file": ("cut.jpg", EXAMPLE.read_bytes()[:400])}}, 400, "cut.jpg: not a readable"),
    ("too many pixels", {"files": {"file": ("huge.png", huge_png(8000, 8000))}}, 413, "over the limit of 40,000,000"),
    ("a body over 10 MB", {"files": {"file": ("big.png", b"\0" * 10_000_001)}}, 413, "over the limit of 10,000,000 "),
    (
        "an image body over 10 MB",
        {"content": b"\0" * 10_000_001, "headers": {"content-type": "image/png"}},
        413,
        "over the limit of 10,000,000 ",
    ),
    (
        "a streamed body over 10 MB",
        {"content": chunked(11_000_000), "headers": {"content-type": "multipart/form-data; boundary=cut"}},
        413,
        "over the limit of 10,000,000 bytes",
    ),
]


@pytest.mark.parametrize(("what", "arguments", "status", "words"), BAD_PREDICTIONS, ids=[b[0] for b in BAD_PREDICTIONS])
def test_a_bad_prediction_request_gets_its_status_and_a_detail(client, what, arguments, status, words):
    response = client.post("/predict", **arguments)
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert isinstance(body["detail"], str) and words in body["detail"]
    if status == 422:  # FastAPI's own list stays beside the sentence
        assert set(body) == {"detail", "errors"} and body["errors"][0]["loc"] == ["body", "file"]
    else:
        assert set(body) == {"detail"}
    if "body over" in what:  # refused before it is read: the connection is not reused
        assert response.headers["connection"] == "close"


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", "IMAGE/PNG; charset=x"])
def test_predict_takes_the_image_as_the_whole_body_too(client, content_type):
    """`curl --data-binary @digit.png -H 'Content-Type: image/png'`: no form to parse, the same answer."""
    digit = png_bytes(scribbles(1, seed=3)[0])
    form = predict(client, files={"file": ("d.png", digit)}, headers=TO_MAIN)
    raw = predict(client, content=digit, headers={**TO_MAIN, "content-type": content_type})
    assert raw["probabilities"] == form["probabilities"] and raw["request_id"] != form["request_id"]
    refused = client.post("/predict", content=b"plain text", headers={"content-type": "image/png"})
    assert refused.status_code == 400 and refused.json() == {
        "detail": "body: not a readable image (the formats read here are PNG, JPEG, BMP, GIF, WEBP, PPM)"
    }
    empty = client.post("/predict", content=b"", headers={"content-type": "image/png"})
    assert empty.status_code == 400 and empty.json()["detail"] == "body: empty file"


def waiting_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the requests never got there"
        time.sleep(0.01)


class Gated:
    """A classifier that holds its first forward pass until `release` is set (and says when it has begun)."""

    def __init__(self, classifier) -> None:
        self.inner, self.runtime = classifier, classifier.runtime
        self.begun, self.release, self.passes = threading.Event(), threading.Event(), []

    def probabilities(self, digits):
        self.passes.append(len(digits))
        self.begun.set()
        assert self.release.wait(10), "never released"
        return self.inner.probabilities(digits)


@pytest.mark.parametrize("max_batch", [16, 1])
def test_requests_in_flight_together_share_one_forward_pass_and_each_is_logged(models, max_batch):
    main, _ = models
    gated = Gated(main.classifier)
    settings = ServeSettings(batching=Batching(max_batch=max_batch))
    digits = [png_bytes(drawn) for drawn in scribbles(8, seed=9)]
    alone = [predict(TestClient(create_app(main)), files={"file": ("d.png", d)})["probabilities"] for d in digits]
    with (
        TestClient(create_app(dataclasses.replace(main, classifier=gated), settings)) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        first = pool.submit(predict, client, files={"file": ("0.png", digits[0])})
        assert gated.begun.wait(10)
        rest = [pool.submit(predict, client, files={"file": (f"{i}.png", d)}) for i, d in enumerate(digits) if i]
        batcher = client.app.state.predictor.batcher
        # the other seven arrive while the first pass is held: queued for the next batch, or (no batching) each
        # at the gate in its own pass
        waiting_for(lambda: batcher.queued == 7 if batcher else len(gated.passes) == 8)
        gated.release.set()
        answers = [first.result(10)] + [future.result(10) for future in rest]
        tallies = client.get("/ab").json()["versions"][main.version]
        metrics = client.get("/metrics").text
    assert [answer["probabilities"] for answer in answers] == alone  # each its own answer, in order
    assert len({answer["request_id"] for answer in answers}) == 8 and tallies["requests"] == 8
    if max_batch > 1:
        assert gated.passes == [1, 7]  # the seven that waited went through in one pass
        assert "mnist_forward_pass_images_count 2.0" in metrics and "mnist_forward_pass_images_sum 8.0" in metrics
    else:  # no batching: each request alone, side by side in the thread pool
        assert gated.passes == [1] * 8


def test_a_micro_batch_answers_each_arm_and_fails_a_bad_image_alone_and_decodes_a_large_one_apart(models):
    """Four requests queued behind a held forward pass: one per arm of the A/B test, an unreadable image (400 for
    it alone) and a 2500x2500 image (6 MB to decode: taken out of the batch and answered on its own)."""
    main, candidate = models
    gated = Gated(main.classifier)
    app = create_app(dataclasses.replace(main, classifier=gated), SETTINGS, candidate)
    digits = [png_bytes(drawn) for drawn in scribbles(3, seed=11)]
    sent = [
        ({"file": ("main.png", digits[1])}, TO_MAIN),
        ({"file": ("candidate.png", digits[2])}, TO_CANDIDATE),
        ({"file": ("notes.png", b"not an image")}, TO_MAIN),
        ({"file": ("large.png", image(2500, colour=0))}, TO_CANDIDATE),
    ]
    with TestClient(app) as client, ThreadPoolExecutor(5) as pool:
        first = pool.submit(client.post, "/predict", files={"file": ("0.png", digits[0])}, headers=TO_MAIN)
        assert gated.begun.wait(10)
        rest = [pool.submit(client.post, "/predict", files=files, headers=headers) for files, headers in sent]
        waiting_for(lambda: client.app.state.predictor.batcher.queued == 4)
        gated.release.set()
        answers = [first.result(10)] + [future.result(10) for future in rest]
        metrics = client.get("/metrics").text
    assert [answer.status_code for answer in answers] == [200, 200, 200, 400, 200]
    assert "notes.png: not a readable image" in answers[3].json()["detail"]
    versions = [answer.json()["model_version"] for answer in answers if answer.status_code == 200]
    assert versions == [main.version, main.version, candidate.version, candidate.version]
    assert answers[4].json()["reason"].startswith("no digit found")  # black: blank, but answered
    assert gated.passes == [1, 1]  # main: the first request alone, then its one image of the batch
    # the candidate: its image of the batch in one pass, the large one in a pass of its own
    assert f'mnist_model_duration_seconds_count{{model_version="{candidate.version}"}} 2.0' in metrics


def test_a_batch_answers_every_file_in_order_and_a_bad_one_alone(client):
    digits = [png_bytes(drawn) for drawn in scribbles(3, seed=5)]
    files = [("files", (f"{i}.png", digit)) for i, digit in enumerate(digits)]
    files.insert(1, ("files", ("notes.txt", b"not an image")))
    files.append(("files", ("huge.png", huge_png(8000, 8000))))
    response = client.post("/predict/batch", files=files, headers=TO_CANDIDATE)
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == client.app.state.experiment.candidate
    results = body["results"]
    assert [r["filename"] for r in results] == ["0.png", "notes.txt", "1.png", "2.png", "huge.png"]
    assert [r["status"] for r in results] == [200, 400, 200, 200, 413]
    assert "notes.txt: not a readable image" in results[1]["error"] and results[1]["prediction"] is None
    alone = [predict(client, files={"file": ("d.png", d)}, headers=TO_CANDIDATE) for d in digits]
    answered = [r for r in results if r["status"] == 200]
    for mine, single in zip(answered, alone, strict=True):  # the same model answers a batch as it answers one
        assert mine["prediction"] == single["prediction"] and mine["probabilities"] == single["probabilities"]
        assert mine["request_id"] != single["request_id"] and mine["error"] is None


def test_a_batch_of_unreadable_files_is_answered_without_the_model(client):
    response = client.post("/predict/batch", files=[("files", ("a.txt", b"x")), ("files", ("b.png", b""))])
    assert response.status_code == 200 and [r["status"] for r in response.json()["results"]] == [400, 400]
    assert client.get("/ab").json()["versions"][client.app.state.experiment.main]["requests"] == 0


def test_an_empty_or_too_large_batch_is_refused(client):
    empty = client.post("/predict/batch", files={"file": ("a.png", image())})
    assert empty.status_code == 422 and empty.json()["detail"].startswith("empty batch")
    many = [("files", (f"{i}.png", image(28, 0))) for i in range(65)]
    too_many = client.post("/predict/batch", files=many)
    assert too_many.status_code == 413
    assert too_many.json() == {"detail": "a batch of 65 files is over the limit of 64: split it into several requests"}


def test_behind_a_proxy_the_validation_detail_names_the_route(models):
    main, _ = models
    behind = TestClient(create_app(main), root_path="/mnist")
    assert behind.post("/mnist/predict/batch").json()["detail"].startswith("empty batch")


def test_clients_keep_their_model_and_ab_tallies_each(client, models):
    main, candidate = models
    ids = [f"user-{i}" for i in range(40)]
    first = [predict(client, files={"file": ("d.png", image(28, 0))}, headers={"X-Client-Id": i}) for i in ids]
    versions = [answer["model_version"] for answer in first]
    assert versions == [candidate.version if hashed_share(i, SALT) < 0.5 else main.version for i in ids]
    again = [predict(client, files={"file": ("d.png", image(28, 0))}, headers={"X-Client-Id": i}) for i in ids[:5]]
    assert [answer["model_version"] for answer in again] == versions[:5]
    anonymous = {predict(client, files={"file": ("d.png", image(28, 0))})["model_version"] for _ in range(40)}
    assert anonymous == {main.version, candidate.version}  # at random: both, but for a 1 in 10^12 chance

    report = client.get("/ab").json()
    assert report["fraction"] == 0.5 and (report["main"], report["candidate"]) == (main.version, candidate.version)
    tallies = report["versions"]
    assert tallies[main.version]["role"] == "main" and tallies[candidate.version]["role"] == "candidate"
    assert sum(t["requests"] for t in tallies.values()) == 85
    assert tallies[main.version]["mean_confidence"] is None  # blank images: answered, no prediction to average
    assert tallies[main.version]["feedback"] == 0 and tallies[main.version]["accuracy"] is None


def test_feedback_scores_an_answer_once_and_a_second_label_is_refused(client, models):
    main, _ = models
    answers = [predict(client, files={"file": ("d.png", png_bytes(d))}, headers=TO_MAIN) for d in scribbles(2)]
    right, wrong = answers[0], answers[1]
    recorded = client.post("/feedback", json={"request_id": right["request_id"], "label": right["prediction"]})
    assert recorded.status_code == 200
    assert recorded.json() == {
        "model_version": main.version,
        "prediction": right["prediction"],
        "label": right["prediction"],
        "correct": True,
    }
    other = (wrong["prediction"] + 1) % 10
    assert client.post("/feedback", json={"request_id": wrong["request_id"], "label": other}).json()["correct"] is False
    tally = client.get("/ab").json()["versions"][main.version]
    assert (tally["requests"], tally["feedback"], tally["accuracy"]) == (2, 2, 0.5)

    again = client.post("/feedback", json={"request_id": right["request_id"], "label": 1})
    assert again.status_code == 409 and set(again.json()) == {"detail"}
    assert "has its label already, and the first label stands" in again.json()["detail"]
    assert client.get("/ab").json()["versions"][main.version]["accuracy"] == 0.5  # the first label stands
    unknown = client.post("/feedback", json={"request_id": "unknown", "label": 1})
    assert unknown.status_code == 404 and unknown.json()["detail"].endswith(
        "no answer has that id; send the request_id of one of this service's answers"
    )


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"json": {"request_id": "x", "label": 12}}, "body.label: Input should be less than or equal to 9"),
        ({"json": {"label": 1}}, "body.request_id: Field required"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, "body.1: JSON decode error"),
        ({}, "body: Field required"),
    ],
)
def test_bad_feedback_gets_a_422_with_a_sentence_and_the_errors(client, body, detail):
    response = client.post("/feedback", **body)
    assert response.status_code == 422
    assert response.json()["detail"] == detail and response.json()["errors"][0]["msg"] in detail


def drift(client: TestClient) -> dict:
    report = client.get("/monitoring").json()
    assert report["window"] == WINDOW and report["min_samples"] == 10
    assert report["thresholds"] == {"warn": 0.1, "alert": 0.25}
    roles = [model["role"] for model in report["models"]]
    assert roles == ["main", "candidate"] and report["status"] == report["models"][0]["status"]
    return report


def send(client: TestClient, images: list[Image.Image]) -> None:
    files = [("files", (f"{i}.png", png_bytes(drawn))) for i, drawn in enumerate(images)]
    assert client.post("/predict/batch", files=files, headers=TO_MAIN).status_code == 200


def test_monitoring_collects_then_is_ok_for_the_reference_and_alerts_for_changed_inputs(client, models):
    main, candidate = models
    fresh = drift(client)
    assert fresh["status"] == "collecting" and fresh["models"][1]["status"] == "no reference"
    assert fresh["models"][0] == {
        "model_version": main.version,
        "role": "main",
        "samples": 0,
        "status": "collecting",
        "psi": {},
    }

    send(client, scribbles(WINDOW))  # the images the reference was made of
    same = drift(client)["models"][0]
    assert same["status"] == "ok" and same["samples"] == WINDOW and max(same["psi"].values()) == 0, same["psi"]

    squares = [Image.new("L", (28, 28), 0) for _ in range(WINDOW)]
    for n, square in enumerate(squares):
        square.paste(255, (4, 4, 12 + n % 12, 24))  # filled blocks, not strokes: far more ink
    send(client, squares)
    changed = drift(client)["models"][0]
    assert changed["status"] == "alert" and changed["psi"]["ink_fraction"] >= 0.25, changed["psi"]
    gauge = (
        f'mnist_drift_psi{{model_version="{main.version}",statistic="ink_fraction"}} {changed["psi"]["ink_fraction"]}'
    )
    metrics = client.get("/metrics").text
    assert gauge in metrics
    # the status as the alert rules match it (monitoring/alerts.yml): 1 for the current one, 0 for the others
    for status, value in (("alert", "1.0"), ("ok", "0.0"), ("collecting", "0.0")):
        assert f'mnist_drift_status{{model_version="{main.version}",status="{status}"}} {value}' in metrics
    assert f'mnist_drift_status{{model_version="{candidate.version}",status="no reference"}} 1.0' in metrics
    verdict = f'candidate="{candidate.version}",main="{main.version}"'  # labels in alphabetical order
    assert f'mnist_ab_verdict{{{verdict},verdict="undecided"}} 1.0' in metrics
    assert f'mnist_ab_verdict{{{verdict},verdict="candidate worse"}} 0.0' in metrics
    assert drift(client)["models"][1] == {
        "model_version": candidate.version,
        "role": "candidate",
        "samples": 0,
        "status": "no reference",
        "psi": {},
    }


def test_health_and_model_describe_the_main_model(client, models):
    main, _ = models
    assert client.get("/health").json() == {"status": "ok", "model_version": main.version}
    public = {
        "model_version": main.version,
        "network": "mlp",
        "runtime": "torch",
        "network_args": {"hidden": [16], "dropout": 0.2},
        "metrics": {"state": "finished", "test/acc": 0.1},
        "details": False,
        "checkpoint": None,
        "run_dir": None,
    }
    assert client.get("/model").json() == public
    details = {
        **public,
        "details": True,
        "checkpoint": str(main.checkpoint),
        "run_dir": str(main.checkpoint.parent.parent),
    }
    shown = TestClient(create_app(main, ServeSettings(auth=Auth(public_details=True))))
    assert shown.get("/model").json() == details


def test_metrics_count_every_request_by_route_and_status(client, models):
    main, candidate = models
    predict(client, files={"file": ("d.png", png_bytes(scribbles(1)[0]))}, headers=TO_MAIN)
    client.post("/predict", files={"file": ("notes.txt", b"text")})
    client.post("/predict", files={"file": ("big.png", b"\0" * 10_000_001)})  # refused before routing
    client.get("/nothing/here")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        f'mnist_model_info{{model_version="{main.version}",network="mlp",role="main"}} 1.0',
        f'mnist_model_info{{model_version="{candidate.version}",network="mlp",role="candidate"}} 1.0',
        'mnist_http_requests_total{route="/predict",status="200"} 1.0',
        'mnist_http_requests_total{route="/predict",status="400"} 1.0',
        'mnist_http_requests_total{route="/predict",status="413"} 1.0',
        'mnist_http_requests_total{route="unmatched",status="404"} 1.0',
        f'mnist_model_answers_total{{model_version="{main.version}"}} 1.0',
        f'mnist_model_duration_seconds_count{{model_version="{main.version}"}} 1.0',
    ):
        assert line in text, line
    assert 'mnist_http_request_duration_seconds_bucket{le="0.005",route="/predict"}' in text
    assert re.search(rf'mnist_predictions_total\{{digit="\d",model_version="{main.version}"\}} 1\.0', text)


def test_the_drawing_page_and_its_files(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="static/page.js"' in page.text and 'href="static/page.css"' in page.text
    assert (
        client.get("/static/page.js").headers["content-type"].startswith(("text/javascript", "application/javascript"))
    )
    assert client.get("/static/page.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/missing.js").status_code == 404


def test_the_openapi_schema_lists_every_route_by_theme(client):
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == ROUTES  # the page and its files are not part of the API
    tags = {path: [op["tags"] for op in item.values()] for path, item in schema["paths"].items()}
    assert (
        tags["/predict/batch"] == [["predict"]] and tags["/feedback"] == [["ab"]] and tags["/health"] == [["service"]]
    )
    assert {"Prediction", "BatchPrediction", "ModelInfo", "ErrorDetail", "Monitoring", "ABReport"} <= set(
        schema["components"]["schemas"]
    )
    errors = schema["paths"]["/predict"]["post"]["responses"]
    assert {"200", "400", "413", "422"} <= set(errors)
    assert client.get("/docs").status_code == 200


def test_unknown_paths_and_methods_get_fastapis_answers(client):
    missing = client.get("/nothing")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    wrong = client.get("/predict")
    assert wrong.status_code == 405 and wrong.json() == {"detail": "Method Not Allowed"}
    assert wrong.headers["allow"] == "POST"


def test_one_model_alone_with_the_default_settings(models):
    main, _ = models
    alone = TestClient(create_app(main))
    assert predict(alone, files={"file": EXAMPLE.open("rb")}, headers=TO_CANDIDATE)["model_version"] == main.version
    report = alone.get("/ab").json()
    assert (report["fraction"], report["main"], report["candidate"], list(report["versions"])) == (
        0.0,
        main.version,
        None,
        [main.version],
    )
    report = alone.get("/monitoring").json()
    assert (report["window"], report["min_samples"], len(report["models"])) == (500, 200, 1)


def test_the_config_holds_every_setting_with_the_models_defaults():
    conf = serve_config()
    assert set(ServeSettings.model_fields) <= set(conf)
    for group, model in (
        ("limits", Limits),
        ("ab", AB),
        ("monitoring", Monitoring),
        ("store", Store),
        ("batching", Batching),
    ):
        assert set(conf[group]) == set(model.model_fields), group
    # the one difference: the config keeps the log in outputs/, a bare app (a test, a notebook) in memory
    assert service_settings(conf) == ServeSettings(store={"url": "sqlite:///outputs/serving.db"})
    conf.ab.fraction = 1
    assert service_settings(conf).ab.fraction == 1  # no candidate: the share is unused, so not checked


def test_workers_auto_is_one_per_core_with_a_shared_log_and_one_with_a_log_in_memory():
    cores = min(len(os.sched_getaffinity(0)), 8)
    assert service_settings(serve_config()).workers == 1  # the default
    assert service_settings(serve_config("workers=auto")).workers == cores  # the config's log: a SQLite file
    assert service_settings(serve_config("workers=auto", "store.url=null")).workers == 1
    assert service_settings(serve_config("workers=3")).workers == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["port=70000"], "port=70000: must be at most 65535"),
        (["limits.max_batch=0", "monitoring.window=2.5"], "limits.max_batch=0: must be at least 1; monitoring.window="),
        (["limits.max_bach=3"], "limits.max_bach=3: no such setting"),
        (["ab.candidate=latest", "ab.fraction=1"], "ab.fraction=1.0: the candidate's share must be between 0 and 1"),
        (["graceful_shutdown_s=-1"], "graceful_shutdown_s=-1: must be at least 0"),
        (["monitoring.warn=0"], "monitoring.warn=0.0, monitoring.alert=0.25: need 0 < warn <= alert"),
        (["monitoring.warn=true"], "monitoring.warn=True: must be a number"),
        (["workers=2", "store.url=null"], "workers=2 needs a prediction log they share"),
    ],
)
def test_settings_are_refused_in_one_line_naming_the_keys(overrides, message):
    conf = serve_config(*overrides)
    with pytest.raises(UserError, match=re.escape(message)) as refused:
        service_settings(conf)
    assert "\n" not in str(refused.value)


def test_numbers_from_the_environment_are_numbers(monkeypatch):
    """`port=${oc.env:PORT}` always gives a string: a number written that way is taken as the number."""
    monkeypatch.setenv("PORT", "8080")
    monkeypatch.setenv("WARN", "0.05")
    conf = serve_config("port=${oc.env:PORT}", "monitoring.warn=${oc.env:WARN}")
    settings = service_settings(conf)
    assert settings.port == 8080 and settings.monitoring.warn == 0.05


def test_an_in_process_app_with_a_candidate_checks_its_share(models):
    main, candidate = models
    with pytest.raises(UserError, match="ab.fraction=1.5: the candidate's share must be between 0 and 1"):
        create_app(main, ServeSettings(ab={"fraction": 1.5}), candidate)
