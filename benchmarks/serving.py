"""Serving: requests/s and latency of the HTTP service, a server and a load generator on one machine.

The load generator is a lean asyncio client (keep-alive connections, each sending its next request when the
answer to the last has arrived, requests encoded once): it takes a fraction of a millisecond of CPU a request,
so that on a 2-core machine the figures are the server's rather than the client's. Each server configuration
is started once, exported model and all, and measured with 1, 8 and 32 clients.
"""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import Bench, log, median, percentile
from benchmarks.report import row
from mnist_lightning.serving.settings import usable_cores

CLIENTS = (1, 8, 32)
# name: (overrides, the payloads measured). "before" is the baseline: the service without this round's options
# (the checkpoint in PyTorch, every request alone in the thread pool); the others turn one option off or on.
CONFIGS = {
    "defaults": ([], ("28x28 PNG", "28x28 PNG, raw body", "280x280 canvas PNG")),
    "batching off": (["batching.max_batch=1"], ("28x28 PNG", "28x28 PNG, raw body")),
    "runtime=torch": (["runtime=torch"], ("28x28 PNG",)),
    "workers=auto": (["workers=auto"], ("28x28 PNG", "28x28 PNG, raw body")),
    "before": (["runtime=torch", "batching.max_batch=1"], ("28x28 PNG", "28x28 PNG, raw body")),
}
TARGETS = {1: ("p50", "<= 3 ms"), 8: ("rate", ">= 500 requests/s")}


def serving(bench: Bench) -> list[dict]:
    """`python -m mnist_lightning.serve` over HTTP on loopback, the model exported (so the default runtime is ONNX
    Runtime): requests/s, p50 and p99 of POST /predict with 1, 8 and 32 clients, for each configuration above."""
    checkpoint = bench.exported_checkpoint()
    payloads = make_payloads(bench)
    seconds = 0.2 if bench.quick else 3.0  # quick: a smoke run of the harness, its figures mean nothing
    measured: dict[tuple[str, str, int], dict] = {}
    for config, (overrides, names) in CONFIGS.items():
        if bench.quick and config not in ("defaults", "before"):
            continue
        with Server(bench, checkpoint, overrides, config) as port:
            # a fresh server's first seconds are slower (first calls of each code path, caches, clocks): warm it up
            load(port, payloads[names[0]], 8, seconds)
            for name in names:
                for clients in CLIENTS:
                    figures = measured[config, name, clients] = rounds(port, payloads[name], clients, seconds, bench)
                    log(
                        f"   serving [{config}] {name}, {clients} client(s): {figures['rate']:.0f} req/s, "
                        f"p50 {figures['p50']:.2f} ms, p99 {figures['p99']:.2f} ms"
                    )
    how = (
        f"{{clients}} keep-alive connection(s) from one asyncio client process on 127.0.0.1, each sending its "
        f"next request when the last is answered, for {seconds} s a round after a warm-up round; median of "
        f"{bench.repeats} rounds (p50 and p99 too); server: python -m mnist_lightning.serve, the seed CNN exported "
        f"(the training figures' checkpoint, else untrained weights: the cost is the same), prediction log on "
        f"SQLite, one worker (workers=auto: {usable_cores()} here); the baseline: runtime=torch "
        f"batching.max_batch=1 in the same run"
    )
    rows = []
    for (config, name, clients), figures in measured.items():
        if config == "before":
            continue
        before = measured.get(("before", name, clients)) if config == "defaults" else None
        label = name if config == "defaults" else f"{name}, {config}"
        metric, goal = TARGETS.get(clients, ("", ""))
        goal = goal if config == "defaults" and name == "28x28 PNG" else ""
        rate, p50 = round(figures["rate"], 1), round(figures["p50"], 2)
        rows += [
            row(
                "serving",
                f"/predict, {label}, {clients} client(s) (requests/s)",
                rate,
                before and round(before["rate"], 1),
                unit="req/s",
                better="higher",
                target=goal if metric == "rate" else "",
                met=(rate >= 500) if goal and metric == "rate" else None,
                method=how.format(clients=clients),
                runs={"ours": figures["rounds"], "baseline": before and before["rounds"]},
            ),
            row(
                "serving",
                f"/predict, {label}, {clients} client(s), p50 (ms)",
                p50,
                before and round(before["p50"], 2),
                unit="ms",
                target=goal if metric == "p50" else "",
                met=(p50 <= 3) if goal and metric == "p50" else None,
            ),
            row(
                "serving",
                f"/predict, {label}, {clients} client(s), p99 (ms)",
                round(figures["p99"], 2),
                before and round(before["p99"], 2),
                unit="ms",
            ),
        ]
    return rows


def make_payloads(bench: Bench) -> dict[str, tuple[bytes, str]]:
    """(body, Content-Type) per payload: a test digit as a 28x28 PNG (in a multipart form, or as the body) and
    resized to 280x280 as the page's canvas sends it."""
    from PIL import Image

    from mnist_lightning.data.files import load_split

    images, _ = load_split(bench.data_dir, train=False)
    pngs = {}
    for size in (28, 280):
        buffer = io.BytesIO()
        Image.fromarray(images[0].numpy()).resize((size, size), Image.Resampling.BILINEAR).save(buffer, "PNG")
        pngs[size] = buffer.getvalue()
    return {
        "28x28 PNG": multipart(pngs[28]),
        "28x28 PNG, raw body": (pngs[28], "image/png"),
        "280x280 canvas PNG": multipart(pngs[280]),
    }


def multipart(png: bytes) -> tuple[bytes, str]:
    boundary = "mnist-benchmark-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\nContent-Type: image/png'
    return (
        f"{head}\r\n\r\n".encode() + png + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


class Server:
    """`python -m mnist_lightning.serve` with these overrides on a free port, from start to a clean stop."""

    def __init__(self, bench: Bench, checkpoint: Path, overrides: list[str], name: str) -> None:
        self.bench, self.checkpoint, self.overrides = bench, checkpoint, overrides
        self.folder = bench.scratch / f"serve-{name.replace(' ', '-').replace('=', '-')}"

    def __enter__(self) -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.folder / "serve.log", "w")  # noqa: SIM115 - closed in __exit__
        args = [
            f"port={self.port}",
            f"ckpt_path={self.checkpoint}",
            f"hydra.run.dir={self.folder / 'run'}",
            f"store.url=sqlite:///{self.folder / 'serving.db'}",
            # every client is this machine's one address: the per-address rate limit would measure itself
            "limits.requests_per_minute=0",
            *self.overrides,
        ]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mnist_lightning.serve", *args],
            env=self.bench.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while not answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the server did not start: {(self.folder / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.2)
        return self.port

    def __exit__(self, *_) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log_file.close()


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return connection.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def rounds(port: int, payload: tuple[bytes, str], clients: int, seconds: float, bench: Bench) -> dict:
    """bench.repeats rounds of `load`: the medians of their requests/s, p50 and p99, and the rounds themselves."""
    measured = [load(port, payload, clients, seconds) for _ in range(bench.repeats)]
    return {**{key: median([r[key] for r in measured]) for key in ("rate", "p50", "p99")}, "rounds": measured}


def load(port: int, payload: tuple[bytes, str], clients: int, seconds: float) -> dict:
    """A warm-up round, then `clients` connections for `seconds`: requests/s over the round, and the p50 and p99
    of the requests' latencies (ms)."""
    asyncio.run(closed_loop(port, payload, clients, min(seconds, 0.5)))
    started = time.perf_counter()
    latencies = asyncio.run(closed_loop(port, payload, clients, seconds))
    elapsed = time.perf_counter() - started
    return {
        "rate": len(latencies) / elapsed,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "requests": len(latencies),
    }


async def closed_loop(port: int, payload: tuple[bytes, str], clients: int, seconds: float) -> list[float]:
    body, content_type = payload
    request = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                lengths = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if not lengths:
                    raise RuntimeError(f"an answer without Content-Length: {head[:300]!r}")
                length = lengths[0]
                answer = await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"/predict answered {head[:40]!r}: {answer[:300]!r}")
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(clients)))
    return latencies
