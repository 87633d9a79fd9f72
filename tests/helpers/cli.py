"""Running the project's commands as a user does: `python -m mnist_lightning.<verb>` in a folder of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(module: str, *overrides: str, cwd: Path, data_dir: Path, timeout: int = 600):
    """Run `python -m module overrides...` in `cwd` (its outputs/ lands there)."""
    env = {**os.environ, "MNIST_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


# A short real training run that several test modules share: 2 epochs of 150 batches, validated on the whole
# split (so model_ref=best compares it), a checkpoint kept for each epoch and a periodic last.ckpt every 100 steps
# (at steps 100 and 200, between the epoch ends at 150 and 300).
FAST = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=150",
    "callbacks.model_checkpoint.save_top_k=-1",
    "callbacks.periodic_checkpoint.every_n_train_steps=100",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
]


def run_dirs(cwd: Path) -> list[Path]:
    """Training run folders under cwd/outputs, oldest first."""
    return sorted(p.parent for p in (cwd / "outputs").glob("*/*/.hydra"))


def run_without(missing_module: str, verb: str, cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    """`python -m mnist_lightning.<verb>` in a process where `missing_module` cannot be imported, as on an install
    without the extra that brings it."""
    code = (
        f"import sys; sys.modules[{missing_module!r}] = None; sys.argv = [{verb!r}]; "
        f"from mnist_lightning.{verb} import main; main()"
    )
    env = {**os.environ, "MNIST_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
