"""Serve a trained model over HTTP: `python -m mnist_lightning.serve` (`make serve`, `mnist-serve`).

A REST API (POST /predict, /predict/batch; GET /health, /model, /metrics; OpenAPI at /docs) and a drawing
page at /. The model is chosen as evaluate and predict choose it, and loaded before the server accepts
connections. Ctrl-C or SIGTERM stops it after the requests in flight are answered.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys

import hydra
from omegaconf import DictConfig

from mnist_lightning.errors import UserError

log = logging.getLogger(__name__)


def serve(cfg: DictConfig) -> None:
    try:
        import uvicorn

        from mnist_lightning.serving.app import ServeSettings, create_app
    except ImportError as exc:
        raise UserError(
            f"serving needs the serve extra ({exc.name} is missing): pip install 'mnist-lightning[serve]' "
            f"(in a checkout: pip install -e '.[serve]')"
        ) from exc
    from mnist_lightning.inference.runtime import pick_device
    from mnist_lightning.runs.resolve import resolve_model
    from mnist_lightning.serving.model import ServedModel

    check_port_free(cfg.host, cfg.port)
    checkpoint = resolve_model(cfg.ckpt_path, cfg.model_ref, cfg.paths.outputs_root)
    model = ServedModel.load(
        checkpoint, device=str(pick_device(cfg.device)), runtime=cfg.runtime, export_dir=cfg.export_dir
    )
    settings = ServeSettings(
        max_body_bytes=int(cfg.limits.max_body_bytes),
        max_batch=int(cfg.limits.max_batch),
        max_pixels=int(cfg.limits.max_pixels),
    )
    app = create_app(model, settings)
    shown_host = "localhost" if cfg.host in ("127.0.0.1", "0.0.0.0") else cfg.host
    url = f"http://{shown_host}:{cfg.port}{cfg.root_path}/"
    log.info("Serving %s (model %s, %s) on %s:%s", checkpoint, model.version, model.runtime, cfg.host, cfg.port)
    print(f"Drawing page: {url}   API: {url}docs   model: {model.version} ({checkpoint})", flush=True)
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


@hydra.main(version_base="1.3", config_path="conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    try:
        serve(cfg)
    except UserError as exc:
        log.error("%s", exc)
        sys.exit(2)


if __name__ == "__main__":
    main()
