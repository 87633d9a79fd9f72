"""Serving: requests/s and latency of the HTTP service, a server process and client threads on one machine."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time

from benchmarks.harness import Bench, log, median, percentile
from benchmarks.report import row


def serving(bench: Bench) -> list[dict]:
    """`python -m mnist_lightning.serve` over HTTP on loopback: requests/s and latency of POST /predict with 1
    and 8 concurrent clients, for a 28x28 PNG and a 280x280 canvas-sized PNG (a digit drawn as on the page)."""
    import httpx
    from PIL import Image

    from mnist_lightning.data.files import load_split

    checkpoint = bench.inference_checkpoint()
    images, _ = load_split(bench.data_dir, train=False)
    payloads = {}
    for name, size in (("28x28 PNG", 28), ("280x280 canvas PNG", 280)):
        buffer = io.BytesIO()
        Image.fromarray(images[0].numpy()).resize((size, size), Image.Resampling.BILINEAR).save(buffer, "PNG")
        payloads[name] = buffer.getvalue()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_file = open(bench.scratch / "serve.log", "w")  # noqa: SIM115 - closed after the server stops
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_lightning.serve",
            f"port={port}",
            f"ckpt_path={checkpoint}",
            f"hydra.run.dir={bench.scratch / 'serve'}",
            # every client is this machine's one address: the per-address rate limit would measure itself
            "limits.requests_per_minute=0",
        ],
        env=bench.env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {(bench.scratch / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.2)
        per_client = 10 if bench.quick else 200

        def client(payload: bytes, latencies: list[float], lock: threading.Lock) -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                http.post("/predict", files={"file": ("d.png", payload)})  # warm the connection
                for _ in range(per_client):
                    started = time.perf_counter()
                    response = http.post("/predict", files={"file": ("d.png", payload)})
                    elapsed = time.perf_counter() - started
                    response.raise_for_status()
                    with lock:
                        latencies.append(elapsed * 1000)

        rows = []
        for name, payload in payloads.items():
            for clients in (1, 8):
                rates, p50s, p99s = [], [], []
                for _ in range(bench.repeats):
                    latencies, lock = [], threading.Lock()
                    threads = [threading.Thread(target=client, args=(payload, latencies, lock)) for _ in range(clients)]
                    started = time.perf_counter()
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
                    rates.append(len(latencies) / (time.perf_counter() - started))
                    p50s.append(percentile(latencies, 0.5))
                    p99s.append(percentile(latencies, 0.99))
                rate, p50, p99 = median(rates), median(p50s), median(p99s)
                log(f"   serving {name}, {clients} client(s): {rate:.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
                how = (
                    f"{clients} client thread(s) x {per_client} requests each, httpx keep-alive connections to "
                    f"one server process on 127.0.0.1 (the clients share the machine's cores), after one warm-up "
                    f"request per client; median of {bench.repeats} rounds (p50 and p99 too)"
                )
                rows += [
                    row(
                        "serving",
                        f"/predict, {name}, {clients} client(s) (requests/s)",
                        round(rate, 1),
                        unit="req/s",
                        better="higher",
                        method=how,
                    ),
                    row("serving", f"/predict, {name}, {clients} client(s), p50 (ms)", round(p50, 2), unit="ms"),
                    row("serving", f"/predict, {name}, {clients} client(s), p99 (ms)", round(p99, 2), unit="ms"),
                ]
        return rows
    finally:
        server.terminate()
        server.wait(60)
        log_file.close()
