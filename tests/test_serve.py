"""`python -m mnist_lightning.serve` as users meet it: a real server on 127.0.0.1, called over HTTP with httpx."""

from __future__ import annotations

import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

import renderings
from helpers import ROOT, huge_png, run_without, start_server, stop_server
from mnist_lightning.data.files import load_split
from mnist_lightning.runs import lineage

pytestmark = pytest.mark.slow  # each module starts a server with the shared trained model

EXAMPLE = ROOT / "examples" / "1_paper.jpg"
MULTIPART = "multipart/form-data; boundary=cut"
STOPPED = -signal.SIGTERM  # after a graceful shutdown uvicorn ends by the signal it got, as service managers expect


def png(array: np.ndarray) -> bytes:
    return renderings.encode(Image.fromarray(array.astype(np.uint8)), "PNG")


@pytest.fixture(scope="module")
def server(trained, mnist_dir, tmp_path_factory):
    cwd, run_dir, _ = trained
    checkpoint = next((run_dir / "checkpoints").glob("epoch_01-*.ckpt"))
    handle = start_server(tmp_path_factory.mktemp("serve"), mnist_dir, f"ckpt_path={checkpoint}")
    handle.checkpoint, handle.run_dir = checkpoint, run_dir
    yield handle
    assert stop_server(handle) == STOPPED, handle.log()


@pytest.fixture(scope="module")
def digits(mnist_dir):
    images, labels = load_split(mnist_dir, train=False)
    return images[:64].numpy(), labels[:64].numpy()


def test_predict_answers_an_image_with_every_field(server):
    response = httpx.post(f"{server.url}/predict", files={"file": EXAMPLE.open("rb")})
    assert response.status_code == 200
    body = response.json()
    assert body["prediction"] == 1 and body["confidence"] == max(body["probabilities"]) > 0.5
    assert len(body["probabilities"]) == 10 and sum(body["probabilities"]) == pytest.approx(1, abs=1e-4)
    assert body["inverted"] is True and body["reason"] is None  # dark ink on paper
    assert body["model_version"] == lineage.sha256sum(server.checkpoint)[:12]


def test_a_blank_image_gets_no_prediction_and_the_reason(server):
    blank = png(np.full((64, 64), 255))
    body = httpx.post(f"{server.url}/predict", files={"file": ("blank.png", blank)}).json()
    assert body["prediction"] is None and body["probabilities"] is None and "no digit found" in body["reason"]


def test_a_batch_answers_every_file_in_order_and_a_bad_one_alone(server, digits):
    images, labels = digits
    files = [("files", (f"{i}.png", png(images[i]))) for i in range(3)]
    files.insert(1, ("files", ("notes.txt", b"not an image")))
    response = httpx.post(f"{server.url}/predict/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["0.png", "notes.txt", "1.png", "2.png"]
    assert results[1]["status"] == 400 and "notes.txt: not a readable image" in results[1]["error"]
    answered = [r for r in results if r["status"] == 200]
    assert [r["prediction"] for r in answered] == [int(labels[i]) for i in range(3)]


def test_health_model_docs_and_metrics(server):
    version = lineage.sha256sum(server.checkpoint)[:12]
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "model_version": version}
    info = httpx.get(f"{server.url}/model").json()
    assert info["model_version"] == version and info["network"] == "cnn" and info["network_args"]["hidden"] == 128
    assert info["run_dir"] == str(server.run_dir.resolve()) and info["checkpoint"] == str(server.checkpoint.resolve())
    assert info["metrics"]["test/acc"] > 0.95 and info["metrics"]["state"] == "finished"
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert {"Prediction", "BatchPrediction", "ModelInfo", "ErrorDetail"} <= set(schema["components"]["schemas"])
    assert "prediction" in schema["components"]["schemas"]["Prediction"]["properties"]
    assert httpx.get(f"{server.url}/docs").status_code == 200
    metrics = httpx.get(f"{server.url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert f'mnist_model_info{{model_version="{version}",network="cnn",role="main"}} 1.0' in metrics.text
    assert 'mnist_http_request_duration_seconds_bucket{le="0.005",route="/predict"}' in metrics.text
    assert re.search(r'mnist_predictions_total\{digit="1",model_version="\w+"\} \d', metrics.text)


def bad_requests(server) -> list[tuple[str, dict, int, str]]:
    """(what, httpx.post arguments, expected status, words the detail must contain)"""
    example = EXAMPLE.read_bytes()
    big = b"\0" * 10_000_001

    def chunked():  # no Content-Length: counted as it streams in
        yield b'--cut\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
        for _ in range(11):
            yield b"\0" * 1_000_000

    return [
        ("no file field", {"files": {"image": ("x.png", example)}}, 422, "missing form field 'file'"),
        ("an empty body", {}, 422, "missing form field 'file'"),
        ("an empty file", {"files": {"file": ("empty.png", b"")}}, 400, "empty.png: empty file"),
        ("not an image", {"files": {"file": ("notes.txt", b"plain text")}}, 400, "notes.txt: not a readable image"),
        ("a truncated image", {"files": {"file": ("cut.jpg", example[:400])}}, 400, "cut.jpg: not a readable image"),
        (
            "too many pixels",
            {"files": {"file": ("huge.png", huge_png(8000, 8000))}},
            413,
            "over the limit of 40,000,000",
        ),
        ("a body over 10 MB", {"files": {"file": ("big.png", big)}}, 413, "over the limit of 10,000,000 bytes"),
        (
            "a streamed body over 10 MB",
            {"content": chunked(), "headers": {"content-type": MULTIPART}},
            413,
            "over the limit of 10,000,000 bytes",
        ),
    ]


def test_bad_requests_get_a_4xx_with_a_detail_and_the_server_keeps_answering(server):
    for what, arguments, status, words in bad_requests(server):
        response = httpx.post(f"{server.url}/predict", timeout=60, **arguments)
        assert response.status_code == status, (what, response.status_code, response.text[:300])
        detail = response.json()["detail"]
        assert isinstance(detail, str) and words in detail, (what, detail)
        assert "Traceback" not in response.text
    empty = httpx.post(f"{server.url}/predict/batch", files={"file": ("a.png", EXAMPLE.read_bytes())})
    assert empty.status_code == 422 and empty.json()["detail"].startswith("empty batch")
    many = [("files", (f"{i}.png", png(np.zeros((28, 28))))) for i in range(65)]
    too_many = httpx.post(f"{server.url}/predict/batch", files=many)
    assert too_many.status_code == 413 and "a batch of 65 files is over the limit of 64" in too_many.json()["detail"]
    assert httpx.post(f"{server.url}/predict", files={"file": EXAMPLE.open("rb")}).json()["prediction"] == 1


def counter_total(text: str, routes: tuple[str, ...]) -> float:
    pattern = r'^mnist_http_requests_total\{route="([^"]+)",status="\d+"\} ([\d.e+]+)$'
    return sum(float(value) for route, value in re.findall(pattern, text, re.M) if route in routes)


def test_a_burst_of_mixed_requests_from_8_clients(server, digits):
    """8 clients x 50 requests: good images, bad ones and batches. No 5xx, every good answer well formed, the
    counters add up to what was sent, and the server is healthy afterwards."""
    images, labels = digits
    routes = ("/predict", "/predict/batch")
    before = counter_total(httpx.get(f"{server.url}/metrics").text, routes)

    def client(seed: int) -> list[tuple[str, int, dict]]:
        rng = np.random.default_rng(seed)
        answers = []
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for _ in range(50):
                kind, i = rng.choice(["good", "bad", "batch"], p=[0.6, 0.2, 0.2]), int(rng.integers(0, 60))
                if kind == "good":
                    response = http.post("/predict", files={"file": (f"{i}.png", png(images[i]))})
                elif kind == "bad":
                    response = http.post("/predict", files={"file": ("bad.png", b"\x89PNG broken")})
                else:
                    files = [("files", (f"{j}.png", png(images[j]))) for j in range(i, i + 4)]
                    response = http.post("/predict/batch", files=files)
                answers.append((kind, i, response.status_code, response.json()))
        return answers

    with ThreadPoolExecutor(8) as pool:
        answers = [a for batch in pool.map(client, range(8)) for a in batch]
    assert len(answers) == 400 and all(status < 500 for _, _, status, _ in answers)
    for kind, i, status, body in answers:
        if kind == "good":
            assert status == 200 and len(body["probabilities"]) == 10 and 0 <= body["prediction"] <= 9
        elif kind == "bad":
            assert status == 400 and "not a readable image" in body["detail"]
        else:
            assert status == 200 and [r["filename"] for r in body["results"]] == [f"{j}.png" for j in range(i, i + 4)]
    correct = [body["prediction"] == labels[i] for kind, i, _, body in answers if kind == "good"]
    assert np.mean(correct) > 0.9
    assert counter_total(httpx.get(f"{server.url}/metrics").text, routes) - before == 400
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_sigterm_lets_the_request_in_flight_finish(trained, mnist_dir, tmp_path):
    _, run_dir, _ = trained
    handle = start_server(tmp_path, mnist_dir, f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")
    # 64 images of 2,000 x 2,000 pixels: long enough to decode that the signal arrives while they are
    large = [("files", (f"{i}.png", png(np.zeros((2000, 2000))))) for i in range(64)]
    result, signalled = {}, threading.Event()

    def request() -> None:
        response = httpx.post(f"{handle.url}/predict/batch", files=large, timeout=120)
        result["status"], result["late"] = response.status_code, signalled.is_set()

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(0.5)
    handle.process.send_signal(signal.SIGTERM)
    signalled.set()
    thread.join(120)
    assert stop_server(handle) == STOPPED, handle.log()
    assert "Shutting down" in handle.log() and "Finished server process" in handle.log()
    assert result == {"status": 200, "late": True}, "the answer came after SIGTERM and was complete"


def test_a_taken_port_is_refused_in_one_line(server, mnist_dir, tmp_path):
    handle = start_server(tmp_path, mnist_dir, f"ckpt_path={server.checkpoint}", port=server.port, wait=False)
    assert handle.process.wait(120) == 2
    log = handle.log()
    assert f"port={server.port}: that address is already in use" in log and "Traceback" not in log


def test_without_the_serve_extra_one_line_says_what_to_install(tmp_path, mnist_dir):
    result = run_without("uvicorn", "serve", tmp_path, mnist_dir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "serving needs the serve extra (uvicorn missing): pip install 'mnist-lightning[serve]'" in result.stderr
