"""Drift monitoring: the last N requests' statistics against the model's reference, as Population Stability
Indexes. NumPy only; no monitoring library is needed for a handful of histograms."""

from __future__ import annotations

import threading
from collections import Counter, deque

from mnist_lightning.inference import statistics
from mnist_lightning.serving.settings import Monitoring


class DriftMonitor:
    """A rolling window of what one model saw and answered; `report()` compares it with the model's reference.

    Statuses: ok (every PSI below `settings.warn`), warn, alert (any PSI at or above `settings.alert`), collecting
    (fewer than `settings.samples_needed` in the window), no reference (the model's export has none: export or
    register it again).

    One client fills at most `client_share` of the window, counted by its address and by its X-Client-Id alike
    (a new id for every request does not escape the cap): its further answers are not observed until its older
    ones leave the window, so no single client can push the status to alert, or back to ok to hide real drift.
    """

    def __init__(self, reference: dict | None, settings: Monitoring, client_share: float = 1.0) -> None:
        self.reference, self.settings = reference, settings
        self._seen: deque[tuple[tuple[str, ...], dict[str, float]]] = deque()
        self._per_client: Counter[str] = Counter()
        self._client_cap = max(1, int(client_share * settings.window))
        self._lock = threading.Lock()

    def observe(self, digit, predicted: int, confidence: float, clients: tuple[str, ...] = ()) -> bool:
        """Add one answer to the window; False when one of `clients` (the caller's address and id, see
        serving/access.Caller) already fills its share of it. No clients: not capped (a token holder)."""
        row = statistics.digit_statistics(digit)
        row["predicted_class"], row["confidence"] = predicted, confidence
        with self._lock:
            # at its cap, a client's answer is observed only in place of its own oldest one
            oldest = self._seen[0][0] if len(self._seen) >= self.settings.window else ()
            if any(self._per_client[c] >= self._client_cap and c not in oldest for c in clients):
                return False
            self._seen.append((clients, row))
            self._per_client.update(clients)
            while len(self._seen) > self.settings.window:
                gone, _ = self._seen.popleft()
                self._per_client.subtract(gone)
                for client in gone:
                    if not self._per_client[client]:
                        del self._per_client[client]
        return True

    def report(self) -> dict:
        with self._lock:
            seen = [row for _, row in self._seen]
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
