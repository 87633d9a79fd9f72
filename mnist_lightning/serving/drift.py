"""Drift monitoring: the last N answers' statistics against the model's reference, as Population Stability
Indexes. The window is read from the prediction log (store/), so every worker and replica reports the same, and a
restart keeps it. NumPy only; no monitoring library is needed for a handful of histograms."""

from __future__ import annotations

from mnist_lightning.inference import statistics
from mnist_lightning.serving.settings import Monitoring
from mnist_lightning.store.log import PredictionLog


def drift_report(
    reference: dict | None, log: PredictionLog, version: str, settings: Monitoring, client_share: float = 1.0
) -> dict:
    """The drift status of `version`: its last `settings.window` answers in the log against its reference.

    Statuses: ok (every PSI below `settings.warn`), warn, alert (any PSI at or above `settings.alert`), collecting
    (fewer than `settings.samples_needed` in the window), no reference (the model's export has none: export or
    register it again). One client fills at most `client_share` of the window, counted by its address and by its
    X-Client-Id alike (PredictionLog.window, which says how far that holds), so one client cannot set the status.
    """
    seen = log.window(version, settings.window, client_share)
    report = {"samples": len(seen), "psi": {}, "status": "no reference" if not reference else "collecting"}
    if not reference or len(seen) < settings.samples_needed:
        return report
    report["psi"] = {
        name: round(statistics.psi(reference[name], [row[name] for row in seen]), 4)
        for name in (*statistics.INPUT_STATISTICS, *statistics.OUTPUT_STATISTICS)
    }
    worst = max(report["psi"].values())
    report["status"] = "alert" if worst >= settings.alert else "warn" if worst >= settings.warn else "ok"
    return report
