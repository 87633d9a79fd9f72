"""Which checkpoint a command uses: the one resolver behind `ckpt_path=` and `model_ref=`.

Training resumes from `ckpt_path=FILE|last`; evaluate, predict, serve, export and register use
`ckpt_path=FILE` or `model_ref=best|latest|registry:NAME@ALIAS|registry:NAME/VERSION`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from mnist_lightning.errors import UserError
from mnist_lightning.runs import layout
from mnist_lightning.runs.lock import lock_holder


def newest_last_checkpoint(outputs_root: str | Path) -> Path:
    """The most recently written `last.ckpt` of a single run under `outputs_root` that no process trains in.

    Sweep jobs are left out: resume one by giving its checkpoint file.
    """
    running = []
    candidates = [run for run in layout.training_runs(outputs_root) if run.last_checkpoint and not run.is_sweep_job]
    for run in sorted(candidates, key=lambda r: r.last_checkpoint.stat().st_mtime, reverse=True):
        if lock_holder(run.path):
            running.append(str(run.path))
            continue
        return run.last_checkpoint
    busy = f" ({len(running)} still training: {', '.join(running)})" if running else ""
    raise UserError(
        f"ckpt_path=last: no single run under {outputs_root} has a {layout.CHECKPOINT_DIR}/{layout.LAST_CHECKPOINT} "
        f"to resume{busy}. Train first (make train), or give ckpt_path=PATH/TO/FILE.ckpt (a sweep job is resumed "
        f"that way: ckpt_path=outputs/multirun/.../JOB/checkpoints/last.ckpt)."
    )


def resume_checkpoint(ckpt_path: str | None, outputs_root: str | Path) -> Path | None:
    """Turn the `ckpt_path` setting of train (None, 'last' or a file) into the checkpoint file to resume from."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        return newest_last_checkpoint(outputs_root)
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserError(f"ckpt_path={ckpt_path}: no such file. Give an existing .ckpt file or ckpt_path=last.")
    if not zipfile.is_zipfile(path):  # refused here, before a run folder is made for it
        what = "the file is empty" if path.stat().st_size == 0 else "not a PyTorch checkpoint"
        raise UserError(
            f"ckpt_path={ckpt_path}: not a resumable mnist_lightning training checkpoint ({what}: every checkpoint "
            f"training writes is a zip archive). Give a .ckpt file training wrote, or ckpt_path=last."
        )
    return path


def resolve_model(ckpt_path: str | None, model_ref: str, outputs_root: str | Path) -> Path:
    """The checkpoint evaluate, predict and serve use: `ckpt_path` if given, else by `model_ref`.

    `best`: the highest val/acc_best among finished runs validated on the whole split (debug runs and runs
    with limited validation are not comparable); `latest`: the most recently updated run with a usable
    checkpoint; `registry:NAME@ALIAS` or `registry:NAME/VERSION`: a version of the model registry, copied
    locally. Runs whose checkpoint is missing, empty or half-written are skipped.
    """
    named = str(model_ref) in ("best", "latest") or str(model_ref).startswith("registry:")
    if not ckpt_path and not named and (str(model_ref).endswith(".ckpt") or Path(str(model_ref)).is_file()):
        ckpt_path = model_ref  # a checkpoint file given where a reference is expected (ab.candidate=FILE)
    if ckpt_path:
        path = Path(ckpt_path)
        if path.is_file() and path.stat().st_size == 0:
            raise UserError(f"ckpt_path={ckpt_path}: the file is empty (an interrupted copy or write?)")
        if not layout.usable(path):
            raise UserError(f"ckpt_path={ckpt_path}: no such checkpoint file")
        return path
    if str(model_ref).startswith("registry:"):
        from mnist_lightning.runs import registry

        return registry.resolve(model_ref, outputs_root)
    if model_ref not in ("best", "latest"):
        raise UserError(
            f"model_ref={model_ref}: use best, latest, registry:NAME@ALIAS or registry:NAME/VERSION, "
            f"or give ckpt_path=FILE"
        )
    candidates = [run for run in layout.training_runs(outputs_root) if run.best_checkpoint]
    if not candidates:
        raise UserError(f"No trained model under {outputs_root}: run `make train` first (or give ckpt_path=FILE).")
    if model_ref == "latest":
        return candidates[-1].best_checkpoint
    comparable = [run for run in candidates if run.validated_on_full_split]
    if not comparable:
        raise UserError(
            f"model_ref=best: none of the {len(candidates)} runs under {outputs_root} finished with validation on "
            f"the whole split (runs with trainer.limit_val_batches, debug presets, interrupted or pruned runs are "
            f"not compared). Use model_ref=latest or ckpt_path=FILE."
        )
    return max(comparable, key=lambda run: run.metrics.get("val/acc_best") or 0.0).best_checkpoint
