"""Retrain from feedback: `python -m mnist_lightning.retrain` (`make retrain`, `mnist-retrain`).

The recipe: read the labelled answers from the prediction log (store.url), write them as a versioned feedback
dataset (outputs/datasets/feedback-<hash>/, data/feedback.py), fine-tune the champion on MNIST's training split
mixed with the dataset's training share (the train recipe, in a normal run folder whose metrics.json also names
the dataset and the parent), measure parent and result on MNIST's test split and on the held-out feedback, and
register the result as the challenger unless it lost more than retrain.max_mnist_drop points on MNIST.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from mnist_lightning.cli.task import verb
from mnist_lightning.errors import UserError

log = logging.getLogger(__name__)


def retrain(cfg: DictConfig) -> dict:
    from mnist_lightning.artifacts import export as exporting
    from mnist_lightning.cli.build import build_data
    from mnist_lightning.cli.recipe import fit_and_test
    from mnist_lightning.data import feedback
    from mnist_lightning.inference.model import LoadedModel
    from mnist_lightning.runs import layout, registry
    from mnist_lightning.runs.resolve import resolve_model
    from mnist_lightning.store.log import PredictionLog, shown

    root, run_dir = cfg.paths.outputs_root, Path(cfg.paths.output_dir)
    settings = checked_settings(cfg.retrain)  # before anything is loaded, let alone trained
    alias = registry.check_alias(str(cfg.alias), f"alias={cfg.alias}", to_set=True)
    reference, name = parent_reference(cfg, registry)
    parent = LoadedModel.load(resolve_model(None, reference, root))

    prediction_log = PredictionLog(cfg.store.url, create=False)
    try:
        rows, counts = prediction_log.labelled(settings["trusted_labels_only"]), prediction_log.counts()
    finally:
        prediction_log.close()
    needed = settings["min_feedback"]
    trusted = " from token holders" if settings["trusted_labels_only"] else ""
    if len(rows) < needed:
        raise UserError(
            f"retrain needs retrain.min_feedback={needed} labelled answers with their images, and "
            f"{shown(cfg.store.url)} holds {len(rows)}{trusted} "
            f"({counts['answers']} answers, {counts['feedback']} labelled): collect more through POST /feedback, "
            f"or lower retrain.min_feedback"
        )
    dataset = feedback.write_dataset(rows, Path(root) / "datasets", settings["holdout"], shown(cfg.store.url))
    manifest = feedback.read_manifest(dataset)
    log.info("Feedback dataset %s: %s", dataset, manifest["counts"])

    with open_dict(cfg):
        cfg.model.net = OmegaConf.create(parent.net)  # the parent's network, whatever model= says
        cfg.data.feedback = str(dataset)
    lineage = {
        "parent": {"model_version": parent.version, "checkpoint": str(parent.checkpoint), "reference": reference},
        "feedback_dataset": {"path": str(dataset), "hash": manifest["hash"], "counts": manifest["counts"]},
    }
    metrics = fit_and_test(cfg, weights_from=parent.checkpoint, extra=lineage)
    child = LoadedModel.load(run_dir / metrics["best_checkpoint"])

    datamodule = build_data(cfg.data, "test")
    holdout_images, holdout_labels, _ = feedback.load_dataset(dataset, "holdout")
    splits = {
        "mnist_test": (datamodule.test_set.images, datamodule.test_set.labels),
        "feedback_holdout": (holdout_images, holdout_labels),
    }
    scores = {role: accuracies(model, splits) for role, model in (("parent", parent), ("retrained", child))}
    drop = 100 * (scores["parent"]["mnist_test"] - scores["retrained"]["mnist_test"])
    registered = None
    if drop <= settings["max_mnist_drop"]:
        export_dir = exporting.exported_for_registry(child, lambda: build_data(cfg.data, "fit"))
        tags = registry.version_tags(child.version, child.net, child.checkpoint, run_dir, metrics)
        tags |= {"parent_model_version": parent.version, "feedback_dataset_hash": manifest["hash"]}
        registered = registry.register(
            child.checkpoint, name or f"mnist-{child.net['arch']}", alias, root, export_dir, tags, run_dir
        )
    metrics |= {"comparison": scores, "mnist_drop_points": round(drop, 4), "registered": registered}
    layout.write_metrics(run_dir, metrics)
    log.info(summary(run_dir, parent, child, scores, len(holdout_labels), registered, alias))
    if registered is None:
        raise UserError(
            f"not registered: MNIST test accuracy {scores['retrained']['mnist_test']:.2%} against the parent's "
            f"{scores['parent']['mnist_test']:.2%}, {drop:.2f} points lower, over "
            f"retrain.max_mnist_drop={cfg.retrain.max_mnist_drop}; the run is in {run_dir}"
        )
    return metrics


def checked_settings(node: DictConfig) -> dict:
    """retrain.* as numbers, or one line naming the key that is not one."""
    rules = {
        "min_feedback": (int, lambda v: v >= 1, "a whole number >= 1"),
        "holdout": (float, lambda v: 0 <= v < 1, "a share from 0 (none held out) to below 1"),
        "max_mnist_drop": (float, lambda v: True, "a number of points (negative: the result must gain that many)"),
        "trusted_labels_only": (bool, lambda v: True, "true or false"),
    }
    found = {}
    for key, (kind, allowed, what) in rules.items():
        value = node.get(key)
        try:
            if isinstance(value, bool) != (kind is bool) or isinstance(value, str):
                raise ValueError
            found[key] = kind(value)
            if kind is int and found[key] != float(value):  # 2.5 labels is not a count
                raise ValueError
        except (TypeError, ValueError):
            found[key] = None
        if found[key] is None or not allowed(found[key]):
            raise UserError(f"retrain.{key}={value}: must be {what}")
    return found


def parent_reference(cfg: DictConfig, registry) -> tuple[str, str | None]:
    """(the model_ref of the model to fine-tune, the registered name to file the result under)."""
    if cfg.model_ref not in (None, ""):
        reference = str(cfg.model_ref)
        from_registry = reference.startswith(registry.PREFIX)
        return reference, cfg.name or (registry.parse(reference)[0] if from_registry else None)
    if cfg.name not in (None, ""):
        return f"{registry.PREFIX}{cfg.name}@champion", str(cfg.name)
    names = registry.names_with_alias("champion", cfg.paths.outputs_root)
    if len(names) > 1:
        raise UserError(f"several registered models have a champion ({', '.join(names)}): choose one with name=NAME")
    return (f"{registry.PREFIX}{names[0]}@champion", names[0]) if names else ("best", None)


def accuracies(model, splits: dict) -> dict[str, float | None]:
    import torch

    from mnist_lightning.inference import torch_runtime

    found = {}
    for split, (images, labels) in splits.items():
        if not len(labels):
            found[split] = None
            continue
        logits = torch_runtime.logits_in_batches(model.network, images, 256, torch.device("cpu"))
        found[split] = round(float((logits.argmax(1) == labels).float().mean()), 6)
    return found


def summary(run_dir: Path, parent, child, scores: dict, holdout: int, registered: dict | None, alias: str) -> str:
    def percent(value: float | None) -> str:
        return "-" if value is None else f"{value:.2%}"

    def row(split: str) -> str:
        return f"{percent(scores['retrained'][split])} (parent {percent(scores['parent'][split])})"

    where = (
        f"{registered['name']} v{registered['version']}, alias {alias}" if registered else "not registered (see below)"
    )
    return "\n".join(
        [
            "Summary",
            f"  run folder      {run_dir}",
            f"  parent          {parent.version} ({parent.checkpoint})",
            f"  retrained       {child.version}: {where}",
            f"  MNIST test      {row('mnist_test')}",
            f"  feedback        {row('feedback_holdout')} on {holdout} held-out labelled answers",
        ]
    )


@verb("retrain")
def main(cfg: DictConfig) -> None:
    retrain(cfg)


if __name__ == "__main__":
    main()
