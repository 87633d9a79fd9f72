"""Running what is measured: child processes timed from launch to exit, the statistics of several runs, and a
description of the machine they ran on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.parsers import json_lines

ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(fn: Callable, *args) -> float:
    """Seconds that fn(*args) took."""
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile of the values measured (None left out), interpolated between the two nearest ones as numpy
    does; at q=0.5 it is statistics.median. None when nothing was measured."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    position = (len(values) - 1) * q
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def median(values: list[float]) -> float | None:
    return percentile(values, 0.5)


def describe_machine() -> dict:
    """The machine, versions and commit (mnist_lightning's lineage), with any instruction-set limit in force."""
    from mnist_lightning.runs.lineage import lineage

    info = lineage()
    capped = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(k)}
    if capped:  # kernels limited to an older instruction set, to stand in for an older CPU: a section of its own
        info["machine"]["limited_to"] = ", ".join(f"{k}={v}" for k, v in capped.items())
    return info


def title(machine: dict) -> str:
    """The machine's name: its accelerator, else its CPU, and any instruction-set limit the run was under."""
    name = machine.get("accelerator") or machine.get("cpu") or "machine"
    return f"{name} limited to {machine['limited_to']}" if machine.get("limited_to") else name


def slug(machine: dict) -> str:
    text = "".join(c if c.isalnum() else "-" for c in title(machine).lower())
    return "-".join(part for part in text.split("-") if part)[:100]


class Bench:
    """What the figure groups share: the data, the quick limits, the number of runs per figure, a scratch folder
    for the children's files, and a checkpoint of ours once the training figures have made one."""

    def __init__(self, data_dir: Path, quick: bool, repeats: int, scratch: Path):
        self.data_dir, self.quick, self.repeats, self.scratch = data_dir.resolve(), quick, repeats, scratch
        self.checkpoint: Path | None = None
        self.env = {**os.environ, "MNIST_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1"}

    def child(self, name: str, args: list[str]) -> dict:
        """Run `python args...` to completion; its stdout lines, wall seconds, peak RSS (MB) and launch clock time."""
        out_path, err_path = self.scratch / f"{name}.out", self.scratch / f"{name}.err"
        launched_at, started = time.time(), time.perf_counter()
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)  # reaps it and gives its own resource usage
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            tail = err_path.read_text().strip().splitlines()[-15:]
            raise RuntimeError(f"{' '.join(args)} exited with {proc.returncode}:\n" + "\n".join(tail))
        rss_mb = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
        lines = out_path.read_text().splitlines()
        return {"lines": lines, "wall_s": wall, "rss_mb": rss_mb, "launched_at": launched_at}

    def script(self, name: str, script: str, *args: str) -> dict:
        """benchmarks/<script> on our data with these arguments; its JSON lines, and of them the per-epoch ones."""
        got = self.child(name, [f"benchmarks/{script}", "--data-dir", str(self.data_dir), *args])
        got["records"] = json_lines(got["lines"])
        got["epochs"] = [record for record in got["records"] if "epoch" in record]
        return got

    def baseline(self, name: str, *args: str) -> dict:
        """benchmarks/reference.py with these arguments (e.g. "--epochs", "1"); quick runs add small limits."""
        limit = ["--limit-batches", "20", "--eval-limit", "1000"] if self.quick else []
        return self.script(name, "reference.py", *args, *limit)

    def train(self, name: str, overrides: list[str]) -> dict:
        """`python -m mnist_lightning.train overrides...` in a run folder of its own; its metrics.json too."""
        run_dir = self.scratch / name
        limits = [
            "trainer.limit_train_batches=20",
            "trainer.limit_val_batches=2",
            "trainer.limit_test_batches=2",
            "trainer.num_sanity_val_steps=0",
        ]
        args = ["-m", "mnist_lightning.train", f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"]
        got = self.child(name, [*args, *overrides, *(limits if self.quick else [])])
        got["metrics"] = json.loads((run_dir / "metrics.json").read_text())
        got["run_dir"] = run_dir
        return got

    def inference_checkpoint(self) -> Path:
        """The training figures' checkpoint, else an untrained network in the training checkpoint format (latency
        does not depend on the weights)."""
        if self.checkpoint is None:
            import torch

            from mnist_lightning.models import build_network

            network = build_network(arch="cnn")
            self.checkpoint = self.scratch / "untrained.ckpt"
            torch.save(
                {
                    "hyper_parameters": {"net": {"arch": "cnn"}},
                    "state_dict": {f"net.{k}": v for k, v in network.state_dict().items()},
                },
                self.checkpoint,
            )
        return self.checkpoint

    def exported_checkpoint(self) -> Path:
        """inference_checkpoint() with its export in its default folder (python -m mnist_lightning.export, the drift
        reference included), where serve's and predict's runtime=auto find it; exported once per benchmark run."""
        from mnist_lightning.runs import model_json

        checkpoint = self.inference_checkpoint()
        if not (model_json.default_dir(checkpoint) / model_json.META_FILE).is_file():
            out = self.scratch / "export_run"
            self.child("export", ["-m", "mnist_lightning.export", f"ckpt_path={checkpoint}", f"hydra.run.dir={out}"])
        return checkpoint
