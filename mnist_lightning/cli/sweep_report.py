"""The end of a multirun: count the jobs that failed, say which, and let the command exit non-zero.

A failing job does not stop a sweep (its metrics.json says `failed` and why); `SweepReport`, a Hydra
callback (conf/hydra/default.yaml), reads the job folders when the sweep ends so that a sweep whose
jobs failed cannot pass for a successful one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnist_lightning.runs import layout

log = logging.getLogger(__name__)

# what the last multirun of this process found: {"jobs": n, "failed": n, "failures": [...]}; read by train's CLI
last_report: dict | None = None


def job_outcomes(sweep_dir: str | Path, since: float = 0.0) -> list[tuple[Path, str, str | None]]:
    """(job folder, state, error) of the jobs under a sweep folder begun at or after `since` (epoch seconds).

    A job folder without metrics.json died before it could write one (killed, out of memory): it counts as failed.
    """
    outcomes = []
    folders = [p for p in Path(sweep_dir).iterdir() if p.is_dir()] if Path(sweep_dir).is_dir() else []
    for job in sorted(folders, key=lambda p: (len(p.name), p.name)):  # 0, 1, ..., 10
        marker = next((f for f in (job / ".hydra" / "config.yaml", job / layout.METRICS_FILE) if f.is_file()), None)
        if marker is None or marker.stat().st_mtime < since:
            continue
        metrics = layout.read_metrics(job)
        if metrics is None:
            outcomes.append((job, "failed", "no metrics.json: the job process ended before writing one"))
        else:
            state = metrics.get("state") or ("failed" if "error" in metrics else "finished")
            outcomes.append((job, state, metrics.get("error")))
    return outcomes


class SweepReport(Callback):
    """Logs how many jobs of the multirun failed, with each one's folder and error."""

    def __init__(self) -> None:
        self._started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        global last_report
        last_report = None
        self._started = time.time() - 1  # file times can be a little coarser than the clock

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        global last_report
        outcomes = job_outcomes(config.hydra.sweep.dir, since=self._started)
        failures = [(job, error) for job, state, error in outcomes if state == "failed"]
        last_report = {
            "jobs": len(outcomes),
            "failed": len(failures),
            "failures": [{"job": str(job), "error": error} for job, error in failures],
        }
        if failures:
            log.error(
                "%d of %d jobs failed:\n%s",
                len(failures),
                len(outcomes),
                "\n".join(f"  {job}: {error}" for job, error in failures),
            )
        else:
            log.info("All %d jobs of %s ended without error", len(outcomes), config.hydra.sweep.dir)
