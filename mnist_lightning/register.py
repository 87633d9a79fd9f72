"""Register a trained model in MLflow's registry: `python -m mnist_lightning.register` (`make register`).

Files the chosen checkpoint, with its export (ONNX, .pt2 and model.json, made now if missing) and the run's
config, as a version of a registered model (default `mnist-<network>`, e.g. `mnist-cnn`), tagged with its
metrics, data md5s and sha256, and points an alias at it (`champion` by default). The same checkpoint is never
filed twice: registering it again only moves the alias, which is how a challenger is promoted.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from mnist_lightning.cli.task import verb

log = logging.getLogger(__name__)


def register(cfg: DictConfig) -> dict:
    from mnist_lightning.artifacts import export as exporting
    from mnist_lightning.cli.build import build_data
    from mnist_lightning.inference.model import LoadedModel
    from mnist_lightning.runs import registry
    from mnist_lightning.runs.resolve import resolve_model

    # a bad name or alias is refused before anything is loaded or MLflow is asked
    name = None if cfg.name in (None, "") else registry.check_name(str(cfg.name), f"name={cfg.name}")
    alias = registry.check_alias("" if cfg.alias is None else str(cfg.alias), f"alias={cfg.alias}", to_set=True)
    registry.client(cfg.paths.outputs_root)  # fails first, in one line, without the mlflow extra
    model = LoadedModel.load(resolve_model(cfg.ckpt_path, cfg.model_ref, cfg.paths.outputs_root))
    checkpoint, run_dir, metrics = model.checkpoint, model.run_dir, model.metrics
    name = name or f"mnist-{model.net['arch']}"
    export_dir = exporting.exported_for_registry(model, lambda: build_data(cfg.data, "fit")) if cfg.export else None
    tags = registry.version_tags(model.version, model.net, checkpoint, run_dir, metrics)
    result = registry.register(
        checkpoint,
        name,
        alias,
        cfg.paths.outputs_root,
        export_dir,
        tags,
        run_dir,
        (metrics.get("mlflow") or {}).get("run_id"),
    )
    what = "registered as new version" if result["created"] else "already registered as version"
    log.info(
        "\nSummary\n  model version   %s (%s)\n  registry        %s %s %d, alias %s -> v%d\n  store           %s\n"
        "  use it with     model_ref=registry:%s@%s",
        result["model_version"],
        checkpoint,
        name,
        what,
        result["version"],
        alias,
        result["version"],
        registry.tracking_uri(cfg.paths.outputs_root),
        name,
        alias,
    )
    return result


@verb("register")
def main(cfg: DictConfig) -> None:
    register(cfg)


if __name__ == "__main__":
    main()
