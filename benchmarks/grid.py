"""A 100-job grid sweep with tiny limits, and `summarize` on its 100 run folders.

    python -m benchmarks.grid [--data DIR] [--repeats 5]

Runs `python -m mnist_lightning.train -m seed=range(0,10) data.batch_size=16,...,144,0` (10 x 10 jobs, one
training batch each; batch size 0 fails on purpose, so 10 jobs fail), checks that every job left a run folder,
that the sweep's report and the summary list the 10 failed jobs, and times `summarize` on the sweep folder
(median of --repeats) beside the floor: reading each folder's metrics.json and overrides.yaml and nothing else.
Prints one JSON object; figures belong with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import ROOT, describe_machine, log, median, title

BATCHES = "16,32,48,64,80,96,112,128,144,0"
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "callbacks=none",
]


def floor(sweep: Path) -> None:
    """What any summary must do: read every job's record and overrides."""
    import yaml

    for metrics in sweep.glob("*/metrics.json"):
        json.loads(metrics.read_text())
        yaml.safe_load((metrics.parent / ".hydra" / "overrides.yaml").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("MNIST_DATA_DIR", str(ROOT / "data")))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from mnist_lightning.runs.summary import summarize

    with tempfile.TemporaryDirectory(prefix="mnist-grid-") as scratch:
        env = {**os.environ, "MNIST_DATA_DIR": args.data}
        command = [
            sys.executable,
            "-m",
            "mnist_lightning.train",
            "-m",
            "seed=range(0,10)",
            f"data.batch_size={BATCHES}",
        ]
        log("100-job grid ...")
        started = time.perf_counter()
        sweep_run = subprocess.run([*command, *TINY], cwd=scratch, env=env, capture_output=True, text=True)
        grid_s = time.perf_counter() - started
        (sweep,) = Path(scratch, "outputs", "multirun").glob("*/*")
        jobs = sorted(int(p.name) for p in sweep.iterdir() if p.name.isdigit())
        assert jobs == list(range(100)), f"job folders: {jobs}"
        assert sweep_run.returncode == 1 and "10 of 100 jobs failed" in sweep_run.stderr, sweep_run.stderr[-3000:]

        cli, inside, reads = [], [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            shown = subprocess.run(
                [sys.executable, "-m", "mnist_lightning.summarize", str(sweep)], capture_output=True, text=True
            )
            cli.append(time.perf_counter() - started)
            assert shown.returncode == 0 and "Failed (10 of 100 runs):" in shown.stdout, shown.stderr[-2000:]
            started = time.perf_counter()
            rows, _ = summarize(sweep)
            inside.append(time.perf_counter() - started)
            assert len(rows) == 100
            started = time.perf_counter()
            floor(sweep)
            reads.append(time.perf_counter() - started)

    machine = describe_machine()["machine"]
    figures = {
        "machine": title(machine),
        "grid_jobs": 100,
        "grid_failed_jobs": 10,
        "grid_wall_s": round(grid_s, 1),
        "grid_s_per_job": round(grid_s / 100, 2),
        "summarize_command_s": round(median(cli), 2),
        "summarize_in_process_s": round(median(inside), 3),
        "reading_the_records_s": round(median(reads), 3),
        "repeats": args.repeats,
    }
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
