"""The run-folder contract: what a training run writes, where, and how to find runs again.

A run folder holds `.hydra/` (composed config, overrides, hydra.yaml), `checkpoints/` (the best by
val/acc and `last.ckpt`), TensorBoard events, `train.log`, `metrics.json`, and `.train.lock` while a
process trains in it. Everything that reads or writes those paths goes through this package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mnist_lightning.runs import atomic

METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
TRAIN_LOG = "train.log"  # Hydra names a job's log after the verb: a training run has train.log


def write_metrics(run_dir: str | Path, metrics: dict) -> Path:
    path = Path(run_dir) / METRICS_FILE
    atomic.write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path


def read_metrics(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None


def read_overrides(run_dir: str | Path) -> list[str]:
    """The command-line overrides the run was started with (Hydra's .hydra/overrides.yaml)."""
    try:
        import yaml

        return [str(o) for o in yaml.safe_load((Path(run_dir) / ".hydra" / "overrides.yaml").read_text()) or []]
    except (OSError, ValueError):
        return []


def run_of_checkpoint(checkpoint: str | Path) -> Path | None:
    """The run folder of a checkpoint in its `checkpoints/` folder; None for a checkpoint anywhere else."""
    checkpoint = Path(checkpoint).resolve()
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else None


def path_in_run(path: str | Path, run_dir: str | Path) -> str:
    """`path` relative to the run folder when it lies inside it (the folder can move), else absolute."""
    path, run_dir = Path(path).resolve(), Path(run_dir).resolve()
    return str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)


def usable(path: Path) -> bool:
    """A checkpoint file that exists, is not empty and is not the temporary file of an interrupted write."""
    return path.is_file() and path.stat().st_size > 0 and not path.name.startswith(".")


@dataclass
class Run:
    """One training run folder and what its metrics.json says (empty while it trains or after a crash)."""

    path: Path
    metrics: dict = field(default_factory=dict)

    @property
    def state(self) -> str | None:
        return self.metrics.get("state")

    @property
    def best_checkpoint(self) -> Path | None:
        name = self.metrics.get("best_checkpoint")
        return self.path / name if name and usable(self.path / name) else None

    @property
    def last_checkpoint(self) -> Path | None:
        path = self.path / CHECKPOINT_DIR / LAST_CHECKPOINT
        return path if usable(path) else None

    @property
    def is_sweep_job(self) -> bool:
        """Whether Hydra ran this folder as one job of a multirun (a grid sweep or a search trial)."""
        try:
            import yaml

            return yaml.safe_load((self.path / ".hydra" / "hydra.yaml").read_text())["hydra"]["mode"] == "MULTIRUN"
        except (OSError, ValueError, KeyError, TypeError):
            return False

    @property
    def validated_on_full_split(self) -> bool:
        """A finished run whose validation covered the whole split: its val/acc_best compares with others'."""
        samples, split = self.metrics.get("val_samples"), self.metrics.get("val_split_size")
        return self.state == "finished" and bool(split) and samples == split

    @property
    def updated(self) -> float:
        """When the run last recorded its state (metrics.json), or began (its config), in epoch seconds."""
        for marker in (self.path / METRICS_FILE, self.path / ".hydra" / "config.yaml"):
            if marker.is_file():
                return marker.stat().st_mtime
        return 0.0


def training_runs(root: str | Path) -> list[Run]:
    """Every training run folder under `root`, finished or not, least recently updated first."""
    found = [
        Run(log.parent, read_metrics(log.parent) or {})
        for log in Path(root).glob(f"**/{TRAIN_LOG}")
        if (log.parent / ".hydra").is_dir()
    ]
    return sorted(found, key=lambda run: (run.updated, str(run.path)))
