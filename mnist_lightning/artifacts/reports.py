"""Predictions and labels -> metrics, the classification report and figures. Loads no model.

torchmetrics computes the numbers, matplotlib draws; both are imported only when used so that
`predict` starts fast. The figures are drawn here rather than with torchmetrics' own `.plot()`, whose
confusion matrix has no colour scale and overlapping cell labels at ten classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: predict draws its figure without it
    import torch

CLASSES = [str(d) for d in range(10)]


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict:
    """Accuracy, loss, precision/recall/F1 (per class, macro, weighted), support, ECE and the confusion matrix."""
    import torch
    import torch.nn.functional as F
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_calibration_error,
        multiclass_confusion_matrix,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
    )

    n = logits.shape[1]
    probs, preds = logits.softmax(1), logits.argmax(1)
    scores = {"precision": multiclass_precision, "recall": multiclass_recall, "f1": multiclass_f1_score}
    support = torch.bincount(labels, minlength=n)
    metrics = {
        "accuracy": multiclass_accuracy(preds, labels, n, average="micro").item(),
        "loss": F.cross_entropy(logits, labels).item(),
        "ece": multiclass_calibration_error(probs, labels, n, n_bins=n_bins, norm="l1").item(),
        "n_bins": n_bins,
        "support": int(support.sum()),
    }
    per_class = {name: fn(preds, labels, n, average="none").tolist() for name, fn in scores.items()}
    for average in ("macro", "weighted"):
        metrics[average] = {name: fn(preds, labels, n, average=average).item() for name, fn in scores.items()}
    metrics["per_class"] = {
        cls: {
            "precision": per_class["precision"][i],
            "recall": per_class["recall"][i],
            "f1": per_class["f1"][i],
            "support": int(support[i]),
        }
        for i, cls in enumerate(CLASSES[:n])
    }
    metrics["confusion_matrix"] = multiclass_confusion_matrix(preds, labels, n).tolist()
    return metrics


def classification_report(metrics: dict, digits: int = 4) -> str:
    """The familiar per-class table: precision, recall, f1-score, support, then accuracy and averages."""
    width = max(len("weighted avg"), *(len(c) for c in metrics["per_class"]))
    head = f"{'':>{width}} {'precision':>10} {'recall':>10} {'f1-score':>10} {'support':>10}"
    row = "{:>{w}} {:>10.{d}f} {:>10.{d}f} {:>10.{d}f} {:>10}"
    lines = [head, ""]
    for cls, m in metrics["per_class"].items():
        lines.append(row.format(cls, m["precision"], m["recall"], m["f1"], m["support"], w=width, d=digits))
    lines.append("")
    accuracy, support = metrics["accuracy"], metrics["support"]
    lines.append(f"{'accuracy':>{width}} {'':>10} {'':>10} {accuracy:>10.{digits}f} {support:>10}")
    for average in ("macro", "weighted"):
        m = metrics[average]
        lines.append(
            row.format(f"{average} avg", m["precision"], m["recall"], m["f1"], metrics["support"], w=width, d=digits)
        )
    return "\n".join(lines) + "\n"


def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def confusion_matrix_figure(matrix: list[list[int]], normalize: bool = False, title: str = "Confusion matrix"):
    """Counts (or row-normalised shares) with every cell annotated; rows are true labels."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    values = counts / counts.sum(1, keepdims=True).clip(min=1) if normalize else counts
    fig = _figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else values.max())
    fig.colorbar(image, ax=ax, fraction=0.046)
    n = len(values)
    threshold = (1 if normalize else values.max()) / 2
    for i in range(n):
        for j in range(n):
            text = f"{values[i, j]:.2f}" if normalize else f"{int(values[i, j])}"
            if normalize and values[i, j] == 0:
                text = "0"
            ax.text(
                j, i, text, ha="center", va="center", fontsize=8, color="white" if values[i, j] > threshold else "black"
            )
    ax.set(
        xticks=range(n),
        yticks=range(n),
        xticklabels=CLASSES[:n],
        yticklabels=CLASSES[:n],
        xlabel="predicted digit",
        ylabel="true digit",
        title=title + (" (each row sums to 1)" if normalize else " (counts)"),
    )
    return fig


def misclassified_figure(images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, count: int = 36):
    """The most confidently wrong digits, with true and predicted label and the confidence."""
    confidence, preds = probs.max(1)
    wrong = (preds != labels).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True)][:count]
    cols = 6
    rows = max(1, -(-len(order) // cols))
    fig = _figure(figsize=(cols * 1.6, rows * 1.8 + 0.6), layout="constrained")
    fig.suptitle(f"Most confidently wrong test digits ({len(wrong)} wrong in all)")
    for k in range(rows * cols):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.axis("off")
        if k < len(order):
            i = order[k]
            ax.imshow(images[i].cpu().numpy(), cmap="gray")
            ax.set_title(f"true {labels[i].item()} → {preds[i].item()}\n{confidence[i].item():.0%}", fontsize=8)
    return fig


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15):
    """Per confidence bin: mean confidence, accuracy and count (equal-width bins over [0, 1])."""
    import torch

    confidence, preds = probs.max(1)
    correct = (preds == labels).float()
    index = torch.bucketize(confidence, torch.linspace(0, 1, n_bins + 1)[1:-1])
    count = torch.bincount(index, minlength=n_bins).float()
    mean_conf = torch.bincount(index, weights=confidence, minlength=n_bins) / count.clamp(min=1)
    accuracy = torch.bincount(index, weights=correct, minlength=n_bins) / count.clamp(min=1)
    return mean_conf, accuracy, count


def reliability_figure(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15, ece: float | None = None):
    """Reliability diagram: accuracy against confidence per bin, with the share of samples in each bin."""
    import torch

    mean_conf, accuracy, count = reliability_bins(probs, labels, n_bins)
    edges = torch.linspace(0, 1, n_bins + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1 / n_bins
    used = count > 0
    fig = _figure(figsize=(6, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.bar(centers[used], accuracy[used], width=width, edgecolor="black", label="accuracy")
    low = torch.minimum(mean_conf, accuracy)
    top.bar(
        centers[used],
        (mean_conf - accuracy).abs()[used],
        bottom=low[used],
        width=width,
        color="tab:red",
        alpha=0.3,
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    title = "Reliability diagram" + (f" (ECE {ece:.4f})" if ece is not None else "")
    top.set(ylabel="accuracy", ylim=(0, 1), title=title)
    top.legend(loc="upper left")
    bottom.bar(centers, count / count.sum(), width=width, edgecolor="black")
    bottom.set(xlabel="confidence (max probability)", ylabel="share of samples", yscale="log", xlim=(0, 1))
    return fig


def prediction_figure(original, digit, probabilities: list[float], title: str):
    """Input image, the 28x28 tensor the model saw, and the probabilities of the ten classes."""
    fig = _figure(figsize=(10, 3.2), layout="constrained")
    left, middle, right = fig.subplots(1, 3, width_ratios=[1, 1, 1.6])
    left.imshow(original, cmap="gray" if getattr(original, "mode", "") in ("L", "I;16", "I", "F", "1") else None)
    left.set_title("input")
    middle.imshow(digit, cmap="gray", vmin=0, vmax=1)
    middle.set_title("model input (28x28)")
    for ax in (left, middle):
        ax.axis("off")
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    colors = ["tab:blue" if i == best else "tab:gray" for i in range(len(probabilities))]
    right.bar(range(len(probabilities)), probabilities, color=colors)
    right.set(
        ylim=(0, 1),
        xlabel="digit",
        ylabel="probability",
        xticks=range(len(probabilities)),
        xticklabels=CLASSES[: len(probabilities)],
    )
    right.set_title(title)
    return fig


def save_figure(fig, path) -> None:
    fig.savefig(path, dpi=100)


def write_evaluation(
    run_dir: Path,
    images: torch.Tensor,
    labels: torch.Tensor,
    logits: torch.Tensor,
    n_bins: int = 15,
    misclassified: int = 36,
) -> dict:
    """The metrics of `logits` against `labels`, with the report, the figures (PNG and TensorBoard) and the
    test scalars written into `run_dir`; returns the metrics."""
    from torch.utils.tensorboard import SummaryWriter

    from mnist_lightning.runs import atomic

    metrics = classification_metrics(logits, labels, n_bins=n_bins)
    probs = logits.softmax(1)
    figures = {
        "confusion_matrix": confusion_matrix_figure(metrics["confusion_matrix"]),
        "confusion_matrix_normalized": confusion_matrix_figure(metrics["confusion_matrix"], normalize=True),
        "misclassified": misclassified_figure(images, labels, probs, count=misclassified),
        "reliability": reliability_figure(probs, labels, n_bins, ece=metrics["ece"]),
    }
    writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
    for name, fig in figures.items():
        save_figure(fig, Path(run_dir) / f"{name}.png")
        writer.add_figure(f"evaluate/{name}", fig)
    for name, tag in (("accuracy", "test/acc"), ("loss", "test/loss"), ("ece", "test/ece")):
        writer.add_scalar(tag, metrics[name])
    writer.close()
    atomic.write_text(Path(run_dir) / "classification_report.txt", classification_report(metrics))
    return metrics
