"""Resuming exactly: the random states travel in every checkpoint, and a resume is checked before training.

`ResumeState` stores the torch, NumPy, Python (and CUDA) random states in every checkpoint and puts them
back on resume, so dropout continues exactly where it stopped. (The position inside the epoch travels in
the datamodule's own state.) `check_resumable` refuses a checkpoint that is not a training checkpoint of
the configured network before any training starts.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from mnist_lightning.errors import UserError
from mnist_lightning.models.checkpoint import load_failure, net_spec, unreadable_reason
from mnist_lightning.runs import layout, resolve


def rng_states() -> dict:
    """The global random states as plain data (tensors, ints, lists): loadable with `weights_only=True`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumeState(pl.Callback):
    """Saves the random states with every checkpoint and restores them when training resumes from one."""

    def state_dict(self) -> dict:
        return {"rng_states": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        set_rng_states(state_dict["rng_states"])


def plan_resume(ckpt_path: str | None, outputs_root: str, run_dir: Path, net: dict, trainer: dict) -> dict:
    """{"from": the checkpoint to resume from or None, "resumes": the run's resumes so far, this one included},
    after checking that the checkpoint can be resumed with these settings (`trainer`: the trainer config)."""
    checkpoint = resolve.resume_checkpoint(ckpt_path, outputs_root)
    if checkpoint is None:
        return {"from": None, "resumes": []}
    check_resumable(checkpoint, net, trainer.get("max_epochs"), trainer.get("max_steps"))
    resumes = (layout.read_metrics(run_dir) or {}).get("resumes", [])
    return {
        "from": checkpoint,
        "resumes": [*resumes, {"from": str(checkpoint), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}],
    }


def check_resumable(checkpoint: Path, net: dict, max_epochs: int | None = None, max_steps: int | None = None) -> None:
    """Refuse, naming the setting, a resume whose checkpoint is not a training checkpoint of this network, or the
    last state of a run whose record says it finished (or was pruned) within `max_epochs` and `max_steps`:
    resuming it would train nothing and replace that record. (A run stopped after its last epoch but before its
    test has no finished record: resuming it tests and records it.)"""
    refused = f"ckpt_path={checkpoint}: not a resumable mnist_lightning training checkpoint"
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{refused} ({load_failure(checkpoint, exc)})") from exc
    try:
        saved = net_spec(state)
        step = int(state["global_step"])
        state["loops"], state["optimizer_states"]  # noqa: B018 - a training checkpoint has both
    except Exception as exc:
        raise UserError(f"{refused} ({unreadable_reason(exc)})") from exc
    if saved != net:
        changed = sorted(k for k in set(saved) | set(net) if saved.get(k) != net.get(k))
        detail = ", ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {net.get(k)!r} now" for k in changed)
        raise UserError(
            f"ckpt_path={checkpoint}: the checkpoint's network differs from model.net ({detail}). "
            f"Resume with the run's own model settings, or start a new run without ckpt_path."
        )
    run = layout.run_of_checkpoint(checkpoint)
    record = (layout.read_metrics(run) or {}) if run else {}
    if record.get("state") not in ("finished", "pruned") or step < (record.get("global_step") or 0):
        return
    # Lightning's limits: max_epochs -1 is no limit; left out, 1000 epochs unless max_steps limits the run
    steps_limit = None if max_steps in (None, -1) else max_steps
    epochs_limit = None if max_epochs == -1 or max_epochs is None and steps_limit else max_epochs or 1000
    epochs = int(record.get("epochs") or 0)
    done_epochs = epochs_limit is not None and epochs >= epochs_limit
    if done_epochs or steps_limit is not None and step >= steps_limit:
        where = f"epoch {epochs} of trainer.max_epochs={max_epochs}, " if done_epochs else ""
        where += f"step {step}" if done_epochs else f"step {step} of trainer.max_steps={max_steps}"
        raise UserError(
            f"ckpt_path={checkpoint}: {run} has already finished its schedule ({where}), so resuming would train "
            f"nothing. Train longer in a new run (without ckpt_path, with more epochs), or resume with a larger "
            f"trainer.max_epochs where the scheduler's length allows it (scheduler=none or step)."
        )
