"""The service as a subprocess on 127.0.0.1 and a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(cwd: Path, data_dir: Path, *overrides: str, port: int | None = None, wait: bool = True):
    """`python -m mnist_lightning.serve` on 127.0.0.1 and a free port, as a subprocess (one worker unless the
    overrides say otherwise); waits for /health, and for every worker of workers=N to have started."""
    import httpx

    port = port or free_port()
    if not any(override.startswith("workers=") for override in overrides):
        overrides = ("workers=1", *overrides)  # one process, as the tests count and measure it, unless asked
    log_path = cwd / f"serve-{port}.log"
    env = {**os.environ, "MNIST_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mnist_lightning.serve", f"port={port}", *overrides],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    handle = SimpleNamespace(process=process, port=port, url=f"http://127.0.0.1:{port}", log=log_path.read_text)
    deadline = time.monotonic() + 180
    while wait:
        assert process.poll() is None, f"the server exited with {process.returncode}:\n{handle.log()[-3000:]}"
        try:
            if httpx.get(f"{handle.url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not answer /health within 180 s:\n" + handle.log()[-3000:]
        time.sleep(0.2)
    # workers=N: /health is answered by the first worker up; a test that counts on all of them waits for each
    workers = [o.split("=", 1)[1] for o in overrides if o.startswith("workers=")][-1]
    while wait and workers.isdigit() and int(workers) > 1 and handle.log().count("startup complete") < int(workers):
        assert process.poll() is None, f"the server exited with {process.returncode}:\n{handle.log()[-3000:]}"
        assert time.monotonic() < deadline, f"{workers} workers did not start within 180 s:\n" + handle.log()[-3000:]
        time.sleep(0.2)
    return handle


def stop_server(handle) -> int:
    """SIGTERM, as a process manager stops a service; the exit status."""
    if handle.process.poll() is None:
        handle.process.send_signal(signal.SIGTERM)
    return handle.process.wait(60)
