"""Serve a trained model over HTTP: `python -m mnist_lightning.serve` (`make serve`, `mnist-serve`).

A REST API (POST /predict, /predict/batch; GET /health, /model, /metrics; OpenAPI at /docs) and a drawing
page at /. The model is chosen as evaluate and predict choose it, and loaded before the server accepts
connections. Ctrl-C or SIGTERM stops it after the requests in flight are answered.
"""

from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_lightning.cli.task import task
from mnist_lightning.errors import UserError, require_extra

log = logging.getLogger(__name__)


def serve(cfg: DictConfig) -> None:
    require_extra("serve", "uvicorn", "fastapi", "multipart", "prometheus_client", needed_for="serving")
    import uvicorn

    from mnist_lightning.inference.runtime import pick_device
    from mnist_lightning.runs.resolve import resolve_model
    from mnist_lightning.serving.app import ServeSettings, create_app
    from mnist_lightning.serving.model import ServedModel

    check_port_free(cfg.host, cfg.port)
    watch = cfg.monitoring
    for key, value in {**watch, "fraction": cfg.ab.fraction}.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            group = "ab" if key == "fraction" else "monitoring"
            raise UserError(f"{group}.{key}={value}: must be a number")
    if int(watch.window) < 1 or int(watch.min_samples) < 1:
        raise UserError(
            f"monitoring.window={watch.window}, monitoring.min_samples={watch.min_samples}: both must be at least 1"
        )
    if not 0 < float(watch.warn) <= float(watch.alert):
        raise UserError(
            f"monitoring.warn={watch.warn}, monitoring.alert={watch.alert}: need 0 < warn <= alert "
            f"(the usual PSI thresholds are 0.1 and 0.25)"
        )
    if cfg.ab.candidate and not 0 < float(cfg.ab.fraction) < 1:
        raise UserError(f"ab.fraction={cfg.ab.fraction}: the candidate's share must be between 0 and 1")
    root, device = cfg.paths.outputs_root, str(pick_device(cfg.device))
    checkpoint = resolve_model(cfg.ckpt_path, cfg.model_ref, root)
    model = ServedModel.load(checkpoint, device=device, runtime=cfg.runtime, export_dir=cfg.export_dir)
    candidate = None
    if cfg.ab.candidate:
        reference = str(cfg.ab.candidate)
        is_file = reference.endswith(".ckpt") or Path(reference).is_file()
        candidate_checkpoint = resolve_model(reference if is_file else None, "best" if is_file else reference, root)
        candidate = ServedModel.load(candidate_checkpoint, device=device, runtime=cfg.runtime)
        if candidate.version == model.version:
            raise UserError(f"ab.candidate={reference}: that is the main model itself ({model.version}); give another")
    settings = ServeSettings(
        max_body_bytes=int(cfg.limits.max_body_bytes),
        max_batch=int(cfg.limits.max_batch),
        max_pixels=int(cfg.limits.max_pixels),
        ab_fraction=float(cfg.ab.fraction),
        drift_window=int(cfg.monitoring.window),
        drift_warn=float(cfg.monitoring.warn),
        drift_alert=float(cfg.monitoring.alert),
        drift_min_samples=int(cfg.monitoring.min_samples),
    )
    app = create_app(model, settings, candidate)
    shown_host = "localhost" if cfg.host in ("127.0.0.1", "0.0.0.0") else cfg.host
    url = f"http://{shown_host}:{cfg.port}{cfg.root_path}/"
    log.info("Serving %s (model %s, %s) on %s:%s", checkpoint, model.version, model.runtime, cfg.host, cfg.port)
    print(f"Drawing page: {url}   API: {url}docs   model: {model.version} ({checkpoint})", flush=True)
    if candidate is not None:
        print(
            f"A/B: {float(cfg.ab.fraction):.0%} of clients get candidate {candidate.version} "
            f"({candidate.checkpoint}); GET {url}ab compares them",
            flush=True,
        )
    # uvicorn's own handlers stay off (log_config=None): its lines go through Hydra's, to stderr and serve.log
    uvicorn.run(
        app,
        host=cfg.host,
        port=int(cfg.port),
        log_config=None,
        root_path=cfg.root_path,
        timeout_graceful_shutdown=int(cfg.graceful_shutdown_s),
    )


def check_port_free(host: str, port: int) -> None:
    """Refuse in one line when the address is taken, rather than after loading the model."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, int(port)))
    except OSError as exc:
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
        raise UserError(f"host={host} port={port}: that address {reason}; choose another with port=N") from exc


@hydra.main(version_base="1.3", config_path="pkg://mnist_lightning.conf", config_name="serve")
@task
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
