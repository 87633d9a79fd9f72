"""The production loop behind real servers (`python -m mnist_lightning.serve` on 127.0.0.1 and free ports, an
untrained perceptron's checkpoint): several workers on one port counting together, a server killed in the middle
of a burst losing no answer it returned, and two replicas sharing one PostgreSQL log."""

from __future__ import annotations

import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text

from helpers import png_bytes, scribbles, start_server, stop_server, tiny_run
from mnist_lightning.store.schema import answers

pytestmark = pytest.mark.slow  # each test starts servers
UNLIMITED = ("limits.requests_per_minute=0", "limits.feedback_per_hour=0")  # one address sends everything here


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("loop") / "run", seed=0)


def predict_and_label(url: str, images: list[bytes], client: str, keep_alive: bool = True) -> list[str]:
    """Each image predicted and then labelled with its own prediction; the request ids. keep_alive=False: a new
    connection for every request."""
    ids = []
    limits = httpx.Limits() if keep_alive else httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=url, timeout=30, limits=limits) as http:
        for n, data in enumerate(images):
            answer = http.post("/predict", files={"file": ("d.png", data)}, headers={"X-Client-Id": f"{client}-{n}"})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            label = body["prediction"] if body["prediction"] is not None else 0
            feedback = http.post("/feedback", json={"request_id": body["request_id"], "label": label})
            assert feedback.status_code == 200, feedback.text
            ids.append(body["request_id"])
    return ids


def test_two_workers_answer_on_one_port_and_their_figures_add_up(checkpoint, mnist_dir, tmp_path):
    server = start_server(tmp_path, mnist_dir, f"ckpt_path={checkpoint}", "workers=2", *UNLIMITED)
    try:
        images = [png_bytes(drawn) for drawn in scribbles(125, seed=2)]
        # 8 clients at once, a new connection per request: the kernel hands the connections to both workers (kept
        # alive, all 8 could go to whichever worker accepts first, as asyncio accepts every connection waiting)
        with ThreadPoolExecutor(8) as pool:
            found = pool.map(lambda n: predict_and_label(server.url, images, f"c{n}", keep_alive=False), range(8))
            ids = [request_id for some in found for request_id in some]
        assert len(set(ids)) == 1000
        report = httpx.get(f"{server.url}/ab").json()
        (tally,) = report["versions"].values()
        assert (tally["requests"], tally["feedback"], tally["accuracy"]) == (1000, 1000, 1.0)
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'mnist_http_requests_total{route="/predict",status="200"} 1000.0' in metrics
        assert 'mnist_http_requests_total{route="/feedback",status="200"} 1000.0' in metrics
        # both workers answered, each writing its own counters into the run folder's prometheus/
        (folder,) = tmp_path.glob("outputs/serve/*/*/prometheus")
        workers = {path.stem.rsplit("_", 1)[-1] for path in folder.glob("counter_*.db")}
        assert len(workers) == 2, sorted(folder.iterdir())
    finally:
        assert stop_server(server) == 0, server.log()[-3000:]
    assert "Workers: 2 processes" in server.log()


def test_a_server_killed_in_a_burst_loses_no_answer_it_returned(checkpoint, mnist_dir, tmp_path):
    server = start_server(tmp_path, mnist_dir, f"ckpt_path={checkpoint}", *UNLIMITED)
    returned: list[str] = []
    lock, enough = threading.Lock(), threading.Event()
    data = png_bytes(scribbles(1)[0])

    def burst(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for _ in range(400):
                try:
                    answer = http.post("/predict", files={"file": ("d.png", data)})
                except httpx.TransportError:
                    return  # the server is gone
                if answer.status_code == 200:
                    with lock:
                        returned.append(answer.json()["request_id"])
                        if len(returned) >= 200:
                            enough.set()

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    assert enough.wait(120), server.log()[-3000:]
    server.process.send_signal(signal.SIGKILL)  # no shutdown: what was committed is all there is
    for thread in threads:
        thread.join(60)
    assert server.process.wait(10) == -signal.SIGKILL
    (database,) = tmp_path.glob("outputs/serving.db")
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        logged = set(connection.execute(select(answers.c.request_id)).scalars())
    engine.dispose()
    assert len(returned) >= 200 and set(returned) <= logged, len(set(returned) - logged)


def test_two_replicas_on_one_postgresql_log_give_the_same_figures(checkpoint, mnist_dir, tmp_path, postgres_url):
    name = f"replicas_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    store = "store.url=" + postgres_url.rsplit("/", 1)[0] + f"/{name}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_server(tmp_path / "a", mnist_dir, f"ckpt_path={checkpoint}", store, *UNLIMITED)
    try:
        second = start_server(tmp_path / "b", mnist_dir, f"ckpt_path={checkpoint}", store, *UNLIMITED)
    except BaseException:
        stop_server(first)
        raise
    try:
        images = [png_bytes(drawn) for drawn in scribbles(30, seed=4)]
        with httpx.Client(timeout=30) as http:
            for n, data in enumerate(images):  # answered by one replica, labelled through the other
                body = http.post(f"{first.url}/predict", files={"file": ("d.png", data)}).json()
                label = {"request_id": body["request_id"], "label": (body["prediction"] or 0) if n % 3 else 9}
                assert http.post(f"{second.url}/feedback", json=label).status_code == 200
            seen = [http.get(f"{replica.url}/ab").json() for replica in (first, second)]
            watched = [http.get(f"{replica.url}/monitoring").json() for replica in (first, second)]
        assert seen[0] == seen[1] and watched[0] == watched[1]
        (tally,) = seen[0]["versions"].values()
        assert (tally["requests"], tally["feedback"]) == (30, 30)
        assert tally["accuracy"] < 1  # every third label says 9
        assert watched[0]["models"][0]["samples"] == 30
        engine = create_engine(store.removeprefix("store.url="))
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(answers)).scalar_one() == 30
        engine.dispose()
    finally:
        assert (
            stop_server(first) == stop_server(second) == -signal.SIGTERM
        )  # uvicorn re-raises the signal it stopped on
