"""Serve a trained model over HTTP: `python -m mnist_lightning.serve` (`make serve`, `mnist-serve`).

A REST API (POST /predict, /predict/batch, /feedback; GET /health, /model, /metrics, /monitoring, /ab; OpenAPI
at /docs) and a drawing page at /. Its settings are checked (serving/settings.py) before anything else; the model
is chosen as evaluate and predict choose it, and loaded before the server accepts connections. Ctrl-C or SIGTERM
stops it after the requests in flight are answered.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from mnist_lightning.cli.keys import SECRET_KEYS
from mnist_lightning.cli.task import verb
from mnist_lightning.errors import UserError, require_extra

if TYPE_CHECKING:  # imported when serving: pydantic comes with the serve extra
    from mnist_lightning.serving.settings import ServeSettings

log = logging.getLogger(__name__)


def serve(cfg: DictConfig) -> None:
    require_extra("serve", "uvicorn", "fastapi", "multipart", "prometheus_client", "limits", needed_for="serving")
    import uvicorn

    from mnist_lightning.inference.model import LoadedModel
    from mnist_lightning.runs.resolve import resolve_model
    from mnist_lightning.serving.ab import kept_salt
    from mnist_lightning.serving.app import create_app
    from mnist_lightning.serving.server import return_freed_memory, uvicorn_options
    from mnist_lightning.serving.worker import worker_spec
    from mnist_lightning.store.log import PredictionLog, shown

    settings = service_settings(cfg)
    check_port_free(settings.host, settings.port)
    root, device = cfg.paths.outputs_root, serving_device(cfg.runtime, cfg.device)
    checkpoint = resolve_model(cfg.ckpt_path, cfg.model_ref, root)
    model = LoadedModel.load(checkpoint, cfg.runtime, device, cfg.export_dir)
    candidate = None
    if reference := settings.ab.candidate:  # a .ckpt file, best, latest or registry:NAME@ALIAS, as model_ref takes
        candidate = LoadedModel.load(resolve_model(None, reference, root), cfg.runtime, device)
        if candidate.version == model.version:
            raise UserError(f"ab.candidate={reference}: that is the main model itself ({model.version}); give another")
        if settings.ab.salt is None:  # one per experiment, kept so that clients keep their model across restarts
            salt = kept_salt(Path(root) / "serve", model.version, candidate.version)
            settings = settings.model_copy(update={"ab": settings.ab.model_copy(update={"salt": salt})})
    if settings.answers_others and settings.auth.token is None:
        log.warning(
            "host=%s%s answers other machines and no token is set: anyone who reaches it can send feedback and "
            "move the A/B figures; set MNIST_SERVE_TOKEN (docs/security.md)",
            settings.host,
            " behind a proxy" if settings.trusted_proxies else "",
        )
    # the prediction log is created, or checked, before the server starts
    prediction_log = PredictionLog(settings.store.url, settings.store.keep_inputs)
    shown_host = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0") else settings.host
    url = f"http://{shown_host}:{settings.port}{settings.root_path}/"
    log.info(
        "Serving %s (model %s, %s) on %s:%s", checkpoint, model.version, model.runtime, settings.host, settings.port
    )
    print(f"Drawing page: {url}   API: {url}docs   model: {model.version} ({checkpoint})", flush=True)
    print(f"Prediction log: {shown(settings.store.url)}", flush=True)
    if candidate is not None:
        print(
            f"A/B: {settings.ab.fraction:.0%} of clients get candidate {candidate.version} "
            f"({candidate.checkpoint}); GET {url}ab compares them",
            flush=True,
        )
    if settings.workers > 1:
        prediction_log.close()
        spec = worker_spec(
            settings,
            model.checkpoint,
            candidate and candidate.checkpoint,
            cfg.runtime,
            device,
            cfg.export_dir,
            Path(cfg.paths.output_dir) / "serve.log",
        )
        serve_workers(settings, spec, Path(cfg.paths.output_dir))
        return
    app = create_app(model, settings, candidate, prediction_log)
    return_freed_memory()
    # uvicorn's own handlers stay off (log_config=None): its lines go through Hydra's, to stderr and serve.log
    uvicorn.run(app, log_config=None, **uvicorn_options(settings))


def serving_device(runtime: str, name: str) -> str:
    """The torch device for runtime=torch. ONNX Runtime runs on the CPU, and torch is not imported for it: the
    onnx container image has no torch. With runtime=auto the device is resolved once the runtime is chosen
    (LoadedModel.load), so that torch is imported only when it runs the model."""
    if runtime == "onnx":
        return "cpu"
    if runtime == "auto":
        return name
    from mnist_lightning.inference.torch_runtime import pick_device

    return str(pick_device(name))


def serve_workers(settings: ServeSettings, spec: str, run_dir: Path) -> None:
    """settings.workers processes on one port (uvicorn's own supervisor, which restarts a worker that dies), each
    building the app from `spec` (serving/worker.py). Their Prometheus counters go to files in the run folder's
    prometheus/, which /metrics adds up (prometheus-client's multiprocess mode)."""
    import shutil

    import uvicorn

    from mnist_lightning.serving.server import uvicorn_options
    from mnist_lightning.serving.worker import SPEC

    metrics_dir = run_dir / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # counters of another run would be added up too
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ[SPEC] = spec
    print(f"Workers: {settings.workers} processes; their metrics in {metrics_dir}", flush=True)
    uvicorn.run(
        "mnist_lightning.serving.worker:app_from_environment",
        factory=True,
        workers=settings.workers,
        log_config=None,
        **uvicorn_options(settings, workers=True),
    )


# what a rule's breach says after `key=value: `; other breaches keep pydantic's own words
ALLOWED = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "string_too_short": "must have at least {min_length} characters",
    "bool_type": "must be true or false",
    "list_type": "must be a list, e.g. [a,b]",
    "extra_forbidden": "no such setting",
}


def service_settings(cfg: DictConfig) -> ServeSettings:
    """The service's keys of `cfg` as a ServeSettings; every broken rule in one UserError line, naming the keys."""
    from pydantic import ValidationError

    from mnist_lightning.serving.settings import ServeSettings

    keys = [key for key in ServeSettings.model_fields if key in cfg]
    given = {key: numbers(OmegaConf.to_object(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key]) for key in keys}
    try:
        return ServeSettings.model_validate(given)
    except ValidationError as exc:
        raise UserError("; ".join(breach(error) for error in exc.errors())) from None


def numbers(value):
    """Numbers written as strings become numbers: `port=${oc.env:PORT}` always gives a string. Everything else
    (`true` where a number belongs, say) is left for the settings' strict rules to refuse."""
    if isinstance(value, dict):
        # secrets (a token, a salt) stay strings even when made of digits
        return {key: item if key in SECRET_KEYS else numbers(item) for key, item in value.items()}
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*", value):
        number = float(value)
        return int(number) if number.is_integer() and re.fullmatch(r"\s*[+-]?\d+\s*", value) else number
    return value


def breach(error: dict) -> str:
    if error["type"] == "value_error":  # a rule across keys (a model_validator): its message names them
        return str(error["ctx"]["error"])
    key = ".".join(str(part) for part in error["loc"])
    allowed = ALLOWED[error["type"]].format(**error.get("ctx", {})) if error["type"] in ALLOWED else error["msg"]
    shown = "<hidden>" if error["loc"][-1] in SECRET_KEYS else error["input"]  # a secret stays out of the log
    return f"{key}={shown}: {allowed}"


def check_port_free(host: str, port: int) -> None:
    """Refuse in one line when the address is taken, rather than after loading the model."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, int(port)))
    except OSError as exc:
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
        raise UserError(f"host={host} port={port}: that address {reason}; choose another with port=N") from exc


@verb("serve")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
