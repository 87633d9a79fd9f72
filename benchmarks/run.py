"""The benchmark harness: `make benchmark` (full) or `make benchmark-quick` (tiny limits, a smoke run).

Runs each figure of ours side by side with its baseline, alternating the runs so that both see the
same machine, and takes medians. Writes the results as JSON and renders BENCHMARKS.md from every
results file in benchmarks/results/. Figures that a quick run produces are not comparable: they only
show that the harness works.

    python -m benchmarks.run                      # full: about 30 min on 2 CPU cores
    python -m benchmarks.run --quick --out outputs/benchmarks/quick
    python -m benchmarks.run --only inference,evaluation
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m benchmarks.run --only time_to_accuracy
                                                  # an AVX-512 CPU standing in for an AVX2-only one
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import report
from benchmarks.gpu import gpu
from benchmarks.harness import ROOT, Bench, describe_machine, log
from benchmarks.inference import evaluation, inference, runtimes
from benchmarks.serving import serving
from benchmarks.startup import startup
from benchmarks.time_to_accuracy import time_to_accuracy
from benchmarks.training import training

# in the order they run and are listed; training first: the inference figures reuse its checkpoint
SECTIONS = {f.__name__: f for f in (training, time_to_accuracy, startup, evaluation, inference, runtimes, serving, gpu)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny limits: checks the harness, figures mean nothing")
    parser.add_argument("--repeats", type=int, default=None, help="runs per figure (default 3, quick 1)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {tuple(SECTIONS)}")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR", str(ROOT / "data")))
    parser.add_argument("--render", action="store_true", help="only rewrite BENCHMARKS.md from benchmarks/results/")
    parser.add_argument(
        "--out",
        default=None,
        help="folder for results.json and BENCHMARKS.md "
        "(default: benchmarks/results/<machine>.json and ./BENCHMARKS.md)",
    )
    args = parser.parse_args(argv)
    if args.render:
        report.render_all()
        return 0
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if not (Path(args.data_dir) / "MNIST" / "raw").is_dir():
        parser.error(f"--data-dir {args.data_dir}: no MNIST/raw there; set MNIST_DATA_DIR or pass --data-dir")
    repeats = args.repeats or (1 if args.quick else 3)

    info = describe_machine()
    results = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "repeats": repeats,
        "machine": info["machine"],
        "versions": info["versions"],
        "git_commit": info["git_commit"],
        "git_dirty": info["git_dirty"],
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as scratch:
        bench = Bench(Path(args.data_dir), quick=args.quick, repeats=repeats, scratch=Path(scratch))
        for name in only:
            started = time.perf_counter()
            log(f"== {name}")
            results["rows"] += SECTIONS[name](bench)
            log(f"   {name} took {time.perf_counter() - started:.0f} s")
    saved = report.save(results, only, tuple(SECTIONS), Path(args.out) if args.out else None)
    print(report.render([saved]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
