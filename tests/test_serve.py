"""`python -m mnist_lightning.serve` as users meet it: a real server on 127.0.0.1, called over HTTP with httpx, for
what only a real server shows (the body limit on a socket, concurrent clients, shutdown, the command's own
refusals). Every route and error answer is checked in-process, faster, in test_serve_app.py."""

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
from helpers import ROOT, run_without, start_server, stop_server
from mnist_lightning.data.files import load_split

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
    handle.checkpoint = checkpoint
    yield handle
    assert stop_server(handle) == STOPPED, handle.log()


@pytest.fixture(scope="module")
def digits(mnist_dir):
    images, labels = load_split(mnist_dir, train=False)
    return images[:64].numpy(), labels[:64].numpy()


def chunked():
    """A multipart body over 10 MB without Content-Length: counted as it streams in."""
    yield b'--cut\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    for _ in range(11):
        yield b"\0" * 1_000_000


def test_a_body_over_the_limit_is_refused_on_the_socket_and_the_server_keeps_answering(server):
    """The 413 comes before the body is read, while the client may still be sending it, whether its size was
    declared or not. (Every other error answer is checked in-process, in test_serve_app.py.)"""
    for what, arguments in (
        ("declared", {"files": {"file": ("big.png", b"\0" * 10_000_001)}}),
        ("streamed", {"content": chunked(), "headers": {"content-type": MULTIPART}}),
    ):
        response = httpx.post(f"{server.url}/predict", timeout=60, **arguments)
        assert response.status_code == 413, (what, response.status_code, response.text[:300])
        assert "over the limit of 10,000,000 bytes" in response.json()["detail"], what
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
    result, signalled = {}, threading.Event()

    def slow_body():
        """A batch whose body takes about 2 s to arrive: the signal comes while the request is in flight."""
        for i in range(20):
            yield f'--cut\r\nContent-Disposition: form-data; name="files"; filename="{i}.png"\r\n\r\n'.encode()
            yield png(np.zeros((28, 28))) + b"\r\n"
            time.sleep(0.1)
        yield b"--cut--\r\n"

    def request() -> None:
        response = httpx.post(
            f"{handle.url}/predict/batch", content=slow_body(), headers={"content-type": MULTIPART}, timeout=120
        )
        result["status"], result["late"] = response.status_code, signalled.is_set()
        result["answers"] = len(response.json()["results"])

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(0.5)
    handle.process.send_signal(signal.SIGTERM)
    signalled.set()
    thread.join(120)
    assert stop_server(handle) == STOPPED, handle.log()
    assert "Shutting down" in handle.log() and "Finished server process" in handle.log()
    assert result == {"status": 200, "late": True, "answers": 20}, "the answer came after SIGTERM and was complete"


def test_a_taken_port_is_refused_in_one_line(server, mnist_dir, tmp_path):
    handle = start_server(tmp_path, mnist_dir, f"ckpt_path={server.checkpoint}", port=server.port, wait=False)
    assert handle.process.wait(120) == 2
    log = handle.log()
    assert f"port={server.port}: that address is already in use" in log and "Traceback" not in log


def test_without_the_serve_extra_one_line_says_what_to_install(tmp_path, mnist_dir):
    result = run_without("uvicorn", "serve", tmp_path, mnist_dir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "serving needs the serve extra (uvicorn missing): pip install 'mnist-lightning[serve]'" in result.stderr
