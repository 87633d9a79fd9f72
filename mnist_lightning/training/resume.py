"""Resuming exactly: the random states travel in every checkpoint, and a resume is checked before training.

`ResumeState` stores the torch, NumPy, Python (and CUDA) random states in every checkpoint and puts them
back on resume, so dropout continues exactly where it stopped. (The position inside the epoch travels in
the datamodule's own state.) `check_resumable` refuses a checkpoint that is not a training checkpoint of
the configured network before any training starts.
"""

from __future__ import annotations

import random
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from mnist_lightning.errors import UserError


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


def check_resumable(checkpoint: Path, net: dict) -> None:
    """Refuse, naming the setting, a resume whose checkpoint is not a training checkpoint of this network."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        saved = dict(state["hyper_parameters"]["net"])
        state["loops"], state["optimizer_states"]  # noqa: B018 - a training checkpoint has both
    except Exception as exc:
        reason = f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}"
        raise UserError(
            f"ckpt_path={checkpoint}: not a resumable mnist_lightning training checkpoint ({reason})"
        ) from exc
    if saved != net:
        changed = sorted(k for k in set(saved) | set(net) if saved.get(k) != net.get(k))
        detail = ", ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {net.get(k)!r} now" for k in changed)
        raise UserError(
            f"ckpt_path={checkpoint}: the checkpoint's network differs from model.net ({detail}). "
            f"Resume with the run's own model settings, or start a new run without ckpt_path."
        )
