"""One of several server processes (`serve workers=N`): uvicorn starts N of them on one port, each calling
`app_from_environment()` (uvicorn's `factory=True`), which builds the same app as a single process from what
the serve verb resolved once: the settings, the checkpoints, the runtime.

What they share lives outside any one of them: the prediction log (a SQLite file or a PostgreSQL database, so
/ab, /monitoring and /feedback are the same whichever worker answers) and Prometheus' multiprocess folder (each
worker writes its counters to files there; /metrics adds them up). What each keeps to itself: the decode budget
(memory is per process), the per-client rate limits (a client may send up to N times the limit, one share per
worker), and its own copy of the model.
"""

from __future__ import annotations

import json
import logging
import os

from fastapi import FastAPI

SPEC = "MNIST_SERVE_WORKER"  # the environment variable holding what serve resolved, as JSON


def worker_spec(settings, checkpoint, candidate, runtime: str, device: str, export_dir, log_file=None) -> str:
    """What a worker needs to build the app, as the JSON that serve puts in the environment (readable only by the
    user running the service, as its token already is)."""
    return json.dumps(
        {
            "settings": settings.model_dump(mode="json"),
            "checkpoint": str(checkpoint),
            "candidate": None if candidate is None else str(candidate),
            "runtime": runtime,
            "device": device,
            "export_dir": None if export_dir is None else str(export_dir),
            "log_file": None if log_file is None else str(log_file),
        }
    )


def app_from_environment() -> FastAPI:
    from mnist_lightning.inference.model import LoadedModel
    from mnist_lightning.serving.app import create_app
    from mnist_lightning.serving.server import RequestDeadline, return_freed_memory
    from mnist_lightning.serving.settings import ServeSettings

    spec = json.loads(os.environ[SPEC])
    # as serve's own lines: to stderr and the run folder's serve.log (appended to by every worker)
    handlers = [logging.StreamHandler()] + ([logging.FileHandler(spec["log_file"])] if spec.get("log_file") else [])
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s", handlers=handlers
    )
    settings = ServeSettings.model_validate(spec["settings"])
    RequestDeadline.request_timeout_s = settings.limits.request_timeout_s  # this process serves this one app
    model = LoadedModel.load(spec["checkpoint"], spec["runtime"], spec["device"], spec["export_dir"])
    candidate = None
    if spec["candidate"] is not None:
        candidate = LoadedModel.load(spec["candidate"], spec["runtime"], spec["device"])
    return_freed_memory()
    logging.getLogger(__name__).info("worker %d serving model %s", os.getpid(), model.version)
    return create_app(model, settings, candidate)
