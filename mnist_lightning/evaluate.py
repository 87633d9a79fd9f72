"""Evaluate a trained model on the 10,000 test images: `python -m mnist_lightning.evaluate` (`make evaluate`).

Writes metrics.json, classification_report.txt and figures (confusion matrices, misclassified digits,
reliability diagram) into its own run folder, and the figures to that folder's TensorBoard log.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from mnist_lightning.cli.task import verb

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    from mnist_lightning.artifacts import reports
    from mnist_lightning.cli.build import build_data, check_numbers
    from mnist_lightning.inference import torch_runtime
    from mnist_lightning.inference.model import LoadedModel
    from mnist_lightning.runs import layout, resolve

    check_numbers(cfg, {"n_bins": ("whole", 1, None), "misclassified": ("whole", 0, None)})
    started = time.time()
    run_dir = Path(cfg.paths.output_dir)
    device = torch_runtime.pick_device(cfg.device)
    checkpoint = resolve.resolve_model(cfg.ckpt_path, cfg.model_ref, cfg.paths.outputs_root)
    model = LoadedModel.load(checkpoint, device=str(device))
    log.info("Evaluating %s on %s", checkpoint, device)

    datamodule = build_data(cfg.data, "test")
    images, labels = datamodule.test_set.images, datamodule.test_set.labels
    logits = torch_runtime.logits_in_batches(model.network, images, datamodule.eval_batch_size_for(device), device)
    metrics = reports.write_evaluation(
        run_dir, images, labels, logits, n_bins=cfg.n_bins, misclassified=cfg.misclassified
    )
    record = {
        "kind": "evaluate",
        "checkpoint": str(model.checkpoint),
        "checkpoint_sha256": model.sha256,
        "model_version": model.version,
        "data_md5": datamodule.file_md5,
        "device": str(device),
        "wall_time_s": round(time.time() - started, 2),
        **metrics,
    }
    layout.write_metrics(run_dir, record)
    log.info("\n%s\n%s", reports.classification_report(metrics), _summary(run_dir, checkpoint, metrics))
    return record


def _summary(run_dir: Path, checkpoint: Path, metrics: dict) -> str:
    return "\n".join(
        [
            "Summary",
            f"  checkpoint      {checkpoint}",
            f"  test accuracy   {metrics['accuracy']:.2%} of {metrics['support']:,} images",
            f"  test loss       {metrics['loss']:.4f}",
            f"  macro F1        {metrics['macro']['f1']:.4f}",
            f"  ECE ({metrics['n_bins']} bins)   {metrics['ece']:.4f}",
            f"  written to      {run_dir}",
        ]
    )


@verb("evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
