"""The command line of `train` before Hydra sees it: a resume continues its run in place, and a folder that
cannot be written, a missing checkpoint or a folder in use is refused in one line before any folder is made."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import NoReturn

from mnist_lightning.cli import overrides, ranks
from mnist_lightning.errors import UserError
from mnist_lightning.runs import layout, lock, resolve

RESUMED_ENV = "MNIST_LIGHTNING_RESUMED"


def resume_in_place(argv: list[str]) -> list[str]:
    """`ckpt_path=last|FILE` of a run folder: continue that run in its own folder with its own overrides.

    Returns the command-line arguments Hydra should see: the run's saved overrides, then the ones
    given now (which win), `hydra.run.dir` set to the run's folder, and the new invocation's config
    saved under `.hydra/resume-<time>` so the original `.hydra/` stays as it was. A missing checkpoint
    and a folder another process trains in are refused here, in one line, before Hydra makes or
    touches any folder. Sweeps and checkpoints outside a run folder are left to `train`.
    """
    if os.environ.get(RESUMED_ENV) or any(a.startswith("-") for a in argv):
        return argv
    try:
        given = overrides.by_key(argv)
    except Exception:  # a malformed override: Hydra reports it in its own words
        return argv
    ckpt = overrides.value_of(given["ckpt_path"]) if "ckpt_path" in given else None
    if ckpt in (None, "", "None") or "hydra.run.dir" in given:
        return argv
    outputs_root = overrides.value_of(given["paths.outputs_root"]) if "paths.outputs_root" in given else "outputs"
    try:
        checkpoint = resolve.resume_checkpoint(ckpt, outputs_root)
    except UserError as exc:
        refuse(str(exc))
    run_dir = layout.run_of_checkpoint(checkpoint)
    if run_dir is None or not (run_dir / ".hydra").is_dir():
        return argv
    holder = lock.lock_holder(run_dir)
    if holder is not None and ranks.launched_rank()[0] == 0:  # other ranks of a launch find rank 0's lock there
        refuse(f"ckpt_path={ckpt}: {lock.in_use_message(run_dir, holder)}")
    try:
        saved = overrides.by_key(layout.read_overrides(run_dir))
    except Exception:
        saved = {}
    merged = {k: v for k, v in saved.items() if k not in ("ckpt_path", "optuna_trial") and not k.startswith("hydra.")}
    if "optuna_trial" in saved and "optuna_trial" not in given:
        print(
            f"{run_dir} was a trial of an Optuna search; it resumes as a plain run that no longer reports to the "
            f"study (the trial is closed there).",
            file=sys.stderr,
        )
    merged.update(given)
    merged["ckpt_path"] = overrides.assign("ckpt_path", checkpoint.resolve())
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    os.environ[RESUMED_ENV] = "1"  # DDP workers re-run this command line: expand it only once
    return [*merged.values(), overrides.assign("hydra.run.dir", run_dir), f"hydra.output_subdir=.hydra/resume-{stamp}"]


def check_writable(argv: list[str]) -> None:
    """Refuse at once, in one line, when the folder runs are written to cannot be written."""
    try:
        given = {k: overrides.value_of(v) for k, v in overrides.by_key([a for a in argv if "=" in a]).items()}
    except Exception:
        return  # Hydra reports the malformed override
    target = Path(
        given.get("hydra.run.dir") or given.get("hydra.sweep.dir") or given.get("paths.outputs_root") or "outputs"
    )
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        refuse(
            f"Cannot write run folders under {target}: {existing} is not a writable folder. Fix that, or run from "
            f"a folder you can write to, or give paths.outputs_root=SOME/WRITABLE/FOLDER."
        )


def refuse(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(2)
