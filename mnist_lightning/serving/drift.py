"""Drift monitoring: the last N requests' statistics against the model's reference, as Population Stability
Indexes. NumPy only; no monitoring library is needed for a handful of histograms."""

from __future__ import annotations

import threading
from collections import deque

from mnist_lightning.inference import statistics

# Fewer observations than this give no status: by chance alone, the PSI of 10 bins over n samples is about 9/n
# (0.18 at 50, 0.045 at 200), so a small window would warn about noise.
MIN_SAMPLES = 200


class DriftMonitor:
    """A rolling window of what one model saw and answered; `report()` compares it with the model's reference.

    Statuses: ok (every PSI below `warn`), warn, alert (any PSI at or above `alert`), collecting (fewer than
    `min_samples` in the window, or a full window when it is smaller), no reference (the model's export has none:
    export or register it again).
    """

    def __init__(
        self,
        reference: dict | None,
        window: int = 500,
        warn: float = 0.1,
        alert: float = 0.25,
        min_samples: int = MIN_SAMPLES,
    ) -> None:
        self.reference, self.window, self.warn, self.alert = reference, window, warn, alert
        self.min_samples = min(min_samples, window)
        self._seen: deque[dict[str, float]] = deque(maxlen=window)
        self._lock = threading.Lock()

    def observe(self, digit, predicted: int, confidence: float) -> None:
        row = statistics.digit_statistics(digit)
        row["predicted_class"], row["confidence"] = predicted, confidence
        with self._lock:
            self._seen.append(row)

    def report(self) -> dict:
        with self._lock:
            seen = list(self._seen)
        report = {"samples": len(seen), "psi": {}, "status": "no reference"}
        if not self.reference:
            return report
        if len(seen) < self.min_samples:
            report["status"] = "collecting"
            return report
        report["psi"] = {
            name: round(statistics.psi(self.reference[name], [row[name] for row in seen]), 4)
            for name in (*statistics.INPUT_STATISTICS, *statistics.OUTPUT_STATISTICS)
        }
        worst = max(report["psi"].values())
        report["status"] = "alert" if worst >= self.alert else "warn" if worst >= self.warn else "ok"
        return report
