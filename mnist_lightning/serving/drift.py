"""Drift monitoring: the last N requests' statistics against the model's reference, as Population Stability
Indexes. NumPy only; no monitoring library is needed for a handful of histograms."""

from __future__ import annotations

import threading
from collections import deque

from mnist_lightning.inference import statistics
from mnist_lightning.serving.settings import Monitoring


class DriftMonitor:
    """A rolling window of what one model saw and answered; `report()` compares it with the model's reference.

    Statuses: ok (every PSI below `settings.warn`), warn, alert (any PSI at or above `settings.alert`), collecting
    (fewer than `settings.samples_needed` in the window), no reference (the model's export has none: export or
    register it again).
    """

    def __init__(self, reference: dict | None, settings: Monitoring) -> None:
        self.reference, self.settings = reference, settings
        self._seen: deque[dict[str, float]] = deque(maxlen=settings.window)
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
        if len(seen) < self.settings.samples_needed:
            report["status"] = "collecting"
            return report
        report["psi"] = {
            name: round(statistics.psi(self.reference[name], [row[name] for row in seen]), 4)
            for name in (*statistics.INPUT_STATISTICS, *statistics.OUTPUT_STATISTICS)
        }
        worst = max(report["psi"].values())
        report["status"] = "alert" if worst >= self.settings.alert else "warn" if worst >= self.settings.warn else "ok"
        return report
