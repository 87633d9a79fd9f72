"""The service's limits as only a real server shows them (`python -m mnist_lightning.serve` on 127.0.0.1 and a free
port, an untrained perceptron's checkpoint): the memory and time that large images cost, slow and idle clients,
the connection limit, the OpenAPI schema fuzzed by schemathesis, and the token from the environment. The
in-process checks of the same defences are in test_serve_hostile.py."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from helpers import MALFORMED, encoded, hostile_images, png_bytes, scribbles, start_server, stop_server, tiny_run
from mnist_lightning.serving.settings import Limits

pytestmark = pytest.mark.slow  # each test starts a server
TOKEN = "fuzzing-token-0123456789"
# what peak RSS may grow by under the heaviest load the limits admit: the decode budget, plus request bodies,
# threads and the small reduced images (docs/security.md gives the measured figure)
MEMORY_BUDGET_MB = Limits().decode_budget_bytes / 1e6 + 110


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("limits") / "run", seed=0)


def memory_mb(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (the peak so far) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


def test_eight_clients_sending_the_largest_images_allowed_stay_within_the_memory_budget(
    checkpoint, mnist_dir, tmp_path
):
    server = start_server(tmp_path, mnist_dir, f"ckpt_path={checkpoint}")
    crafted = hostile_images()
    # crafted files, then the largest image each limit admits, then the 40 Mpx RGBA PNG that once cost 1.5 GB: half
    # the clients send 9.6 Mpx of RGBA PNG (77 MB to decode and reduce), the other half 4.8 Mpx of WebP (77 MB
    # too: its decoder holds 16 bytes a pixel); then 40 Mpx of grey (40 MB)
    largest = {
        "png": encoded(Image.new("RGBA", (3100, 3100), (0, 0, 0, 0)), "PNG"),
        "webp": encoded(Image.new("RGB", (2190, 2190), (255, 255, 255)), "WEBP"),
    }
    grey = encoded(Image.new("L", (6324, 6324), 0), "PNG")
    try:
        assert httpx.post(f"{server.url}/predict", files={"file": ("d.png", png_bytes(scribbles(1)[0]))}).is_success
        before = memory_mb(server.process.pid, "VmRSS")

        def client(n: int) -> tuple[float, int, list[int]]:
            kind = "png" if n % 2 else "webp"
            sent = [
                *((name, crafted[name][0]) for name in ("bomb.ico", "progressive.jpg", "text.png")),
                (f"largest.{kind}", largest[kind]),
                ("grey.png", grey),
                ("huge-rgba.png", crafted["rgba.png"][0]),
            ]
            started = time.perf_counter()
            files = [("files", (f"{n}-{name}", data)) for name, data in sent]
            response = httpx.post(f"{server.url}/predict/batch", files=files, timeout=120)
            statuses = [item["status"] for item in response.json()["results"]]
            return time.perf_counter() - started, response.status_code, statuses

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(client, range(8)))
        growth = memory_mb(server.process.pid, "VmHWM") - before
        print(f"peak RSS growth {growth:.0f} MB; answers in {max(a[0] for a in answers):.1f} s at most")
        assert growth < MEMORY_BUDGET_MB, f"peak RSS grew by {growth:.0f} MB"
        for seconds, status, statuses in answers:
            assert status == 200 and seconds < 20, (seconds, status)
            assert statuses[:3] == [400, 413, 400] and statuses[5] == 413, statuses
            # the largest image fills the request's decoding limit, so the grey one is refused in the same request;
            # a file turned away by the busy budget (503) costs the request nothing
            assert tuple(statuses[3:5]) in {(200, 413), (503, 200), (503, 503)}, statuses
        assert sum(statuses[3] == 200 for _, _, statuses in answers) >= 4  # most were decoded, not turned away
        assert memory_mb(server.process.pid, "VmRSS") - before < 100  # the decoded images were given back
        assert httpx.get(f"{server.url}/health").status_code == 200
    finally:
        stop_server(server)


def test_every_hostile_request_against_a_running_server(checkpoint, mnist_dir, tmp_path, monkeypatch):
    """What test_serve_hostile.py checks in-process, once more over HTTP: crafted files, malformed requests, the
    token, another origin's page, /model's details, the per-address rate; the server answers throughout."""
    monkeypatch.setenv("MNIST_SERVE_TOKEN", TOKEN)
    server = start_server(tmp_path, mnist_dir, f"ckpt_path={checkpoint}", "limits.requests_per_minute=30")
    bearer = {"Authorization": f"Bearer {TOKEN}"}  # exempt from the rate, so that it is reached only at the end
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for name, (data, status) in hostile_images().items():
                response = http.post("/predict", files={"file": (name, data)}, headers=bearer)
                assert response.status_code == status and (status == 200 or name in response.json()["detail"]), name
            for what, arguments, route, status in MALFORMED:
                headers = {**arguments.get("headers", {}), **bearer}
                response = http.post(route, **{**arguments, "headers": headers})
                assert response.status_code == status and isinstance(response.json()["detail"], str), what
            answer = http.post("/predict", files={"file": ("d.png", png_bytes(scribbles(1)[0]))}).json()
            label = {"request_id": answer["request_id"], "label": 1}
            assert http.post("/feedback", json=label).status_code == 401
            assert http.post("/feedback", json=label, headers=bearer).status_code == 200
            evil = http.post("/feedback", json=label, headers={**bearer, "Origin": "http://evil.example"})
            assert evil.status_code == 403
            assert http.get("/model").json()["checkpoint"] is None
            assert http.get("/model", headers=bearer).json()["checkpoint"] == str(checkpoint)
            statuses = [
                http.post("/predict", files={"file": ("d.png", png_bytes(scribbles(1)[0]))}).status_code
                for _ in range(31)
            ]
            assert statuses.count(429) >= 1 and set(statuses) == {200, 429}  # 30 a minute, one already sent
            assert http.get("/health").status_code == 200
    finally:
        stop_server(server)
    assert "Traceback" not in server.log() and TOKEN not in server.log()


def read_until_closed(connection: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it did (seconds from now)."""
    started, received = time.monotonic(), b""
    connection.settimeout(limit_s)
    try:
        while chunk := connection.recv(4096):
            received += chunk
    except TimeoutError:
        return received, float("inf")
    except ConnectionResetError:  # closed with a reset: what arrived before it still counts
        pass
    return received, time.monotonic() - started


def test_slow_and_idle_clients_are_cut_off_while_others_are_answered(checkpoint, mnist_dir, tmp_path):
    server = start_server(tmp_path, mnist_dir, f"ckpt_path={checkpoint}", "limits.request_timeout_s=3")
    opened = []
    try:
        for n in range(50):  # half-open requests: headers begun, never finished
            connection = socket.create_connection(("127.0.0.1", server.port))
            connection.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n" if n % 2 else b"")
            opened.append(connection)
        # two requests in one packet: an answered GET, then a POST whose body never comes
        pipelined = socket.create_connection(("127.0.0.1", server.port))
        pipelined.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"
        )
        trickle = socket.create_connection(("127.0.0.1", server.port))  # a body a byte at a time
        trickle.sendall(
            b"POST /feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        )
        stop = threading.Event()

        def drip() -> None:
            # a byte every 0.25 s for 1.5 s, then silence with the body unfinished: a byte sent after the server
            # has closed the connection would be answered with a reset, which can drop the 408 before it is read
            for _ in range(6):
                if stop.wait(0.25):
                    return
                trickle.sendall(b" ")

        threading.Thread(target=drip, daemon=True).start()
        started = time.monotonic()
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200  # answered meanwhile
        assert time.monotonic() - started < 5
        answers = [read_until_closed(connection, 10) for connection in [*opened, trickle, pipelined]]
        stop.set()
        *cut, (both, pipelined_seconds) = answers
        for received, seconds in cut:
            assert seconds < 8, "a slow client held its connection past request_timeout_s"
            assert received.startswith(b"HTTP/1.1 408"), received[:100]
        assert b"limits.request_timeout_s" in cut[-1][0]
        assert both.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 408" in both and pipelined_seconds < 8, both[-300:]
        assert httpx.get(f"{server.url}/health").status_code == 200
    finally:
        for connection in opened:
            connection.close()
        stop_server(server)


def test_connections_past_the_limit_are_answered_503(checkpoint, mnist_dir, tmp_path):
    server = start_server(tmp_path, mnist_dir, f"ckpt_path={checkpoint}", "limits.max_connections=4")
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]

    def answered(status: int) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if httpx.get(f"{server.url}/health").status_code == status:
                return True
            time.sleep(0.1)
        return False

    try:
        assert answered(503)
        for connection in idle:
            connection.close()
        assert answered(200)
    finally:
        stop_server(server)


def schemathesis(url: str, report: Path, *options: str) -> subprocess.CompletedProcess:
    """schemathesis against the served schema: every check (all are on by default; tests/schemathesis.toml says
    which two cannot hold for an image upload, and where), every phase, a bounded number of cases, a fixed seed."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        f"--config-file={Path(__file__).parent / 'schemathesis.toml'}",
        "run",
        f"{url}/openapi.json",
        "--max-examples=40",
        "--seed=1",
        "--generation-database=none",
        "--no-color",
        "--report=junit",
        f"--report-dir={report}",
        *options,
    ]
    report.mkdir(parents=True)
    # run in the report's folder: schemathesis keeps its own files (.schemathesis/) where it runs
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=report)


def test_schemathesis_finds_no_5xx_and_no_answer_outside_the_schema(checkpoint, mnist_dir, tmp_path, monkeypatch):
    server = start_server(tmp_path, mnist_dir, f"ckpt_path={checkpoint}")
    try:
        result = schemathesis(server.url, tmp_path / "open")
    finally:
        stop_server(server)
    assert result.returncode == 0, result.stdout[-8000:]
    assert "Traceback" not in server.log(), server.log()[-3000:]

    # with a token (from the environment, as the docs say) on a server answering other machines: no warning, and
    # the guarded routes are fuzzed with the token and without it (ignored_auth)
    monkeypatch.setenv("MNIST_SERVE_TOKEN", TOKEN)
    guarded = start_server(tmp_path, mnist_dir, f"ckpt_path={checkpoint}", "host=0.0.0.0", "auth.predict=true")
    try:
        result = schemathesis(guarded.url, tmp_path / "guarded", f"--header=Authorization: Bearer {TOKEN}")
    finally:
        stop_server(guarded)
    assert result.returncode == 0, result.stdout[-8000:]
    assert "no token is set" not in guarded.log() and TOKEN not in guarded.log()


def test_answering_other_machines_without_a_token_is_warned_about(checkpoint, mnist_dir, tmp_path):
    server = start_server(tmp_path, mnist_dir, f"ckpt_path={checkpoint}", "host=0.0.0.0", wait=False)
    deadline = time.monotonic() + 120
    try:
        while "no token is set" not in server.log():
            assert server.process.poll() is None and time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.2)
    finally:
        stop_server(server)
    assert "set MNIST_SERVE_TOKEN (docs/security.md)" in server.log()
