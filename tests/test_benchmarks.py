"""The benchmark harness runs on tiny limits and writes results that parse (its figures mean nothing here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.run import main
from helpers import ROOT

pytestmark = pytest.mark.slow  # the benchmark harness end to end


def test_quick_benchmark_writes_json_and_a_table(tmp_path, mnist_dir):
    out = tmp_path / "bench"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--only",
            "training,runtimes,serving",  # evaluation and inference: children like these, left out for time
            "--data-dir",
            str(mnist_dir),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True and results["machine"]["cpu"] and results["versions"]["torch"]
    rows = {row["figure"]: row for row in results["rows"]}
    epoch = rows["epoch time, 55,000 train + 5,000 val (s)"]
    assert epoch["ours"] > 0 and epoch["baseline"] > 0 and epoch["ratio"] == round(epoch["baseline"] / epoch["ours"], 3)
    assert rows["peak RSS of a training run (MB)"]["ours"] > 100
    ceiling = rows["training throughput vs the fastest hand-written loop (samples/s)"]
    assert ceiling["baseline"] > 0 and ceiling["target"] == ">= 0.9x"
    timed = {v["variant"] for v in ceiling["runs"]["fastest"][0]["variants"]}
    assert {"fp32, contiguous", "fp32, channels_last"} <= timed  # and the bf16 pair where the CPU has it
    assert {"training", "runtimes", "serving"} == {row["benchmark"] for row in results["rows"]}
    runtimes = {row["figure"]: row for row in results["rows"] if row["benchmark"] == "runtimes"}
    assert runtimes["ONNX Runtime: batch of 256 prepared digits (images/s)"]["baseline"] > 0  # beside PyTorch eager
    assert runtimes["cold start: predict runtime=onnx vs runtime=torch, one image (s)"]["ours"] > 0
    serving = [row for row in results["rows"] if row["benchmark"] == "serving"]
    # quick: the defaults only, 3 payloads x 1, 8 or 32 clients x 3 figures, beside the baseline's
    assert len(serving) == 27 and all(row["ours"] > 0 for row in serving)
    assert all(row["baseline"] > 0 for row in serving if "canvas" not in row["figure"])
    table = (out / "BENCHMARKS.md").read_text()
    assert "| figure | ours | baseline | ratio | target | met |" in table and "quick run" in table
    assert all(row["figure"] in table for row in results["rows"])


def test_unknown_benchmark_name_is_refused(mnist_dir, capsys):
    with pytest.raises(SystemExit) as refused:
        main(["--only", "speed", "--data-dir", str(mnist_dir)])
    assert refused.value.code == 2 and "unknown benchmark(s) speed" in capsys.readouterr().err
