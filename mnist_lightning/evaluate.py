"""Evaluate a trained model on the 10,000 test images: `python -m mnist_lightning.evaluate` (`make evaluate`).

Writes metrics.json, classification_report.txt and figures (confusion matrices, misclassified digits,
reliability diagram) into its own run folder, and the figures to that folder's TensorBoard log.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from mnist_lightning.errors import UserError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def pick_device(name: str):
    """`auto` (the GPU when there is one), `cpu`, `cuda`, `cuda:N` or another torch device name that exists here."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"device={name}: not a device name; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise UserError(f"device={name}: no CUDA GPU is available here; use device=cpu or device=auto")
        if device.index is not None and device.index >= count:
            raise UserError(f"device={name}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "meta":
        raise UserError(f"device={name}: the meta device holds no data; use auto, cpu or cuda")
    elif device.type != "cpu":
        try:
            torch.empty(1, device=device)
        except Exception as exc:
            raise UserError(f"device={name}: not available here ({exc.__class__.__name__}); "
                            f"use auto, cpu or cuda") from exc
    return device


def predict_logits(network, images, batch_size: int, device) -> torch.Tensor:
    """Logits (N, 10) on the CPU for uint8 images (N, 28, 28), `batch_size` at a time on `device`."""
    import torch

    from mnist_lightning.data import normalize

    with torch.inference_mode():
        return torch.cat([network(normalize(chunk.to(device, non_blocking=True))).float().cpu()
                          for chunk in images.split(batch_size)])


def evaluate(cfg: DictConfig) -> dict:
    from torch.utils.tensorboard import SummaryWriter

    from mnist_lightning import reports, runs
    from mnist_lightning.config import build

    started = time.time()
    run_dir = Path(cfg.paths.output_dir)
    device = pick_device(cfg.device)
    checkpoint = runs.resolve_model(cfg.ckpt_path, cfg.model_ref, cfg.paths.outputs_root)
    network = runs.load_network(checkpoint, map_location=str(device))
    log.info("Evaluating %s on %s", checkpoint, device)

    datamodule = build(cfg.data, "data")
    datamodule.prepare_data()
    datamodule.setup("test")
    images, labels = datamodule.test_set.images, datamodule.test_set.labels
    logits = predict_logits(network, images, datamodule.eval_batch_size_for(device), device)

    metrics = reports.classification_metrics(logits, labels, n_bins=cfg.n_bins)
    probs = logits.softmax(1)
    figures = {
        "confusion_matrix": reports.confusion_matrix_figure(metrics["confusion_matrix"]),
        "confusion_matrix_normalized": reports.confusion_matrix_figure(metrics["confusion_matrix"], normalize=True),
        "misclassified": reports.misclassified_figure(images, labels, probs, count=cfg.misclassified),
        "reliability": reports.reliability_figure(probs, labels, cfg.n_bins, ece=metrics["ece"]),
    }
    writer = SummaryWriter(str(run_dir / "tensorboard"))
    for name, fig in figures.items():
        reports.save_figure(fig, run_dir / f"{name}.png")
        writer.add_figure(f"evaluate/{name}", fig)
    for name in ("accuracy", "loss", "ece"):
        writer.add_scalar(f"test/{name if name != 'accuracy' else 'acc'}", metrics[name])
    writer.close()
    runs.atomic_write_text(run_dir / "classification_report.txt", reports.classification_report(metrics))

    record = {
        "kind": "evaluate",
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": runs.sha256sum(checkpoint),
        "data_md5": datamodule.file_md5,
        "device": str(device),
        "wall_time_s": round(time.time() - started, 2),
        **metrics,
    }
    runs.write_metrics(run_dir, record)
    log.info("\n%s\n%s", reports.classification_report(metrics), _summary(run_dir, checkpoint, metrics))
    return record


def _summary(run_dir: Path, checkpoint: Path, metrics: dict) -> str:
    return "\n".join([
        "Summary",
        f"  checkpoint      {checkpoint}",
        f"  test accuracy   {metrics['accuracy']:.2%} of {metrics['support']:,} images",
        f"  test loss       {metrics['loss']:.4f}",
        f"  macro F1        {metrics['macro']['f1']:.4f}",
        f"  ECE ({metrics['n_bins']} bins)   {metrics['ece']:.4f}",
        f"  written to      {run_dir}",
    ])


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except UserError as exc:
        log.error("%s", exc)
        sys.exit(2)


if __name__ == "__main__":
    main()
