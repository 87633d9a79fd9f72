"""metrics.json, the record of a training run, for every way a run ends: finished or pruned, interrupted by a
signal, failed (a sweep job too), so that summaries, `model_ref=best` and `register` read the same keys."""

from __future__ import annotations

import time
from pathlib import Path

from mnist_lightning.runs import layout, lineage


def finished(run_dir: Path, trainer, fit: dict, tested: dict, *, started: float, seed: int, resume: dict) -> dict:
    """The record of a run whose fit ended by its schedule, a target stop or the pruner (`fit["pruned"]`).

    `trainer` is the Lightning Trainer after fit and test; `fit` what fit left (training.results.fit_outcome);
    `tested` the test results of the best checkpoint; `resume` {"from": checkpoint or None, "resumes": [...]}.
    """
    best = fit.pop("best_checkpoint", None)
    return {
        "state": "pruned" if fit.pop("pruned") else "finished",
        "val/acc_best": fit["last_logged"].get("val/acc_best"),
        "test/acc": number(tested.get("test/acc")),
        "test/loss": number(tested.get("test/loss")),
        "test_samples": tested.get("samples"),
        "test_split_size": tested.get("split_size"),
        "best_checkpoint": layout.path_in_run(best, run_dir) if best else None,
        # the id that names this model everywhere: evaluate, the service's responses, exports, the registry
        "model_version": lineage.model_version(best) if best else None,
        **fit,
        **_progress(trainer, started, seed),
        "precision": str(trainer.precision),
        "world_size": trainer.world_size,
        # the seconds from the start of train() to the first training step
        "setup_s": round(fit["first_step_at"] - started, 2) if fit.get("first_step_at") else None,
        "resumed_from": str(resume["from"]) if resume["from"] else None,
        "resumes": resume["resumes"],
        **lineage.lineage(),
    }


def interrupted(trainer, signal_name: str | None, checkpoint: Path | None, started: float, seed: int, resume: dict):
    """The record of a run stopped by a signal after saving `checkpoint` (None when none could be saved)."""
    return {
        "state": "interrupted",
        "signal": signal_name,
        "checkpoint": str(checkpoint) if checkpoint else None,
        **_progress(trainer, started, seed),
        "resumes": resume["resumes"],
    }


def failed(run_dir: str | Path, error: BaseException | str, resuming: bool = False, **extra) -> dict | None:
    """The record of a run that failed; None when a failed or refused resume leaves a finished, pruned or interrupted
    run's own record as it was (the error is in the command's output and the run's log)."""
    previous = layout.read_metrics(run_dir) if resuming else None
    if previous and previous.get("state") in ("finished", "pruned", "interrupted"):
        return None
    text = error if isinstance(error, str) else f"{error.__class__.__name__}: {error}"
    return {"state": "failed", "error": text, **extra}


def is_partial(metrics: dict) -> bool:
    """Validated or tested on part of its split (trainer.limit_*_batches, debug presets): not comparable."""
    return any(
        metrics.get(seen) is not None and metrics.get(whole) is not None and metrics[seen] < metrics[whole]
        for seen, whole in (("val_samples", "val_split_size"), ("test_samples", "test_split_size"))
    )


def summary(run_dir: Path, metrics: dict) -> str:
    """The lines `train` prints at its end."""

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}%"

    def share(seen, whole):
        if seen is None or whole is None or seen >= whole:
            return ""
        return f" (on {seen:,} of {whole:,} images: partial, not comparable with full runs)"

    test = "test acc" + (" (best checkpoint)" if metrics["best_checkpoint"] else "")
    rows = [
        ("run folder", str(run_dir)),
        (
            "best val acc",
            pct(metrics["val/acc_best"]) + share(metrics.get("val_samples"), metrics.get("val_split_size")),
        ),
        (test, pct(metrics["test/acc"]) + share(metrics.get("test_samples"), metrics.get("test_split_size"))),
        ("test loss", "n/a" if metrics["test/loss"] is None else f"{metrics['test/loss']:.4f}"),
        ("best checkpoint", metrics["best_checkpoint"] or "none saved: tested the final weights"),
        ("epochs", str(metrics["epochs"])),
        ("wall time", f"{metrics['wall_time_s']:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(["Summary"] + [f"  {name:<{width}}  {value}" for name, value in rows])


def number(value) -> float | None:
    return None if value is None else round(float(value), 6)


def _progress(trainer, started: float, seed: int) -> dict:
    return {
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_time_s": round(time.time() - started, 2),
        "seed": seed,
    }
