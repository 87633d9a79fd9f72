"""Simple statistics of what a model sees and says, and the Population Stability Index between two samples of them.

Every prepared 28x28 digit (light on dark, values in 0..1) is summarised by a few numbers whose distribution
changes when the inputs change: how much ink, how large the digit, where its centre of mass lies. A model's
answers are summarised by the predicted class and its probability. The reference distributions are computed
when a model is exported (and so registered) and stored in its model.json; a service compares what it sees
with them (`serving/drift.py`). NumPy only.
"""

from __future__ import annotations

import numpy as np

INK = 0.15  # a pixel above this share of full intensity is ink (as in preprocessing)
INPUT_STATISTICS = ("mean_ink", "ink_fraction", "box_width", "box_height", "centre_offset")
OUTPUT_STATISTICS = ("predicted_class", "confidence")
BINS = 10  # reference bins of equal mass: PSI's usual deciles
EPSILON = 1e-4  # a share of 0 in one sample would make PSI infinite
# A good model's confidence piles up just below 1, where deciles would split hairs (0.99991 vs 0.99995) and any
# retraining or rounding would look like drift: fixed edges, finer towards 1, measure what matters instead.
CONFIDENCE_EDGES = [0.5, 0.7, 0.9, 0.97, 0.99, 0.999, 0.9999]


def digit_statistics(digit: np.ndarray) -> dict[str, float]:
    """mean_ink: mean intensity; ink_fraction: share of ink pixels; box_width/height: the ink's bounding box in
    pixels; centre_offset: distance in pixels of the centre of mass from MNIST's (14, 14)."""
    ink = digit > INK
    rows, cols = np.nonzero(ink)
    total = float(digit.sum())
    if total <= 0 or not len(rows):
        return {"mean_ink": 0.0, "ink_fraction": 0.0, "box_width": 0.0, "box_height": 0.0, "centre_offset": 0.0}
    ys, xs = _GRID
    cy, cx = float((ys * digit).sum() / total), float((xs * digit).sum() / total)
    return {
        "mean_ink": float(digit.mean()),
        "ink_fraction": float(ink.mean()),
        "box_width": float(cols.max() - cols.min() + 1),
        "box_height": float(rows.max() - rows.min() + 1),
        "centre_offset": float(np.hypot(cy - 14.0, cx - 14.0)),
    }


_GRID = np.indices((28, 28), dtype=np.float32)


def reference_bins(values, bins: int = BINS) -> dict:
    """Bin edges at the quantiles of `values` (equal shares of the reference in each bin) and those shares."""
    values = np.asarray(values, dtype=np.float64)
    inner = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    return {"edges": inner.tolist(), "shares": shares(values, inner.tolist())}


def class_shares(classes, n: int = 10) -> dict:
    """The share of each class 0..n-1 (a categorical statistic: no edges)."""
    counts = np.bincount(np.asarray(classes, dtype=np.int64), minlength=n)[:n]
    return {"edges": None, "shares": (counts / max(counts.sum(), 1)).tolist()}


def shares(values, edges: list[float] | None, n: int = 10) -> list[float]:
    """The share of `values` in each bin between `edges` (or of each class 0..n-1 when `edges` is None)."""
    values = np.asarray(values)
    if edges is None:
        counts = np.bincount(values.astype(np.int64), minlength=n)[:n]
    else:
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return (counts / max(counts.sum(), 1)).tolist()


def psi(reference: dict, values) -> float:
    """Population Stability Index of `values` against a reference {edges, shares}: sum of (p - q) ln(p / q)."""
    expected = np.clip(np.asarray(reference["shares"], dtype=np.float64), EPSILON, None)
    observed = np.clip(np.asarray(shares(values, reference["edges"], len(expected)), dtype=np.float64), EPSILON, None)
    return float(((observed - expected) * np.log(observed / expected)).sum())


def reference(digits: list[np.ndarray], predicted: np.ndarray, confidence: np.ndarray) -> dict:
    """The reference of a model: input statistics over `digits`, its answers (class and confidence) on a split."""
    table = [digit_statistics(d) for d in digits]
    result = {name: reference_bins([row[name] for row in table]) for name in INPUT_STATISTICS}
    result["predicted_class"] = class_shares(predicted)
    result["confidence"] = {"edges": CONFIDENCE_EDGES, "shares": shares(confidence, CONFIDENCE_EDGES)}
    return result
