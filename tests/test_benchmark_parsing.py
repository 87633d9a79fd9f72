"""The benchmark harness's statistics and its readers of `python -X importtime` output and of Lightning's
SimpleProfiler report."""

from __future__ import annotations

import statistics
import subprocess
import sys

import pytest

from benchmarks.harness import median, percentile
from benchmarks.parsers import epoch_profile, import_profile


def test_percentile_interpolates_and_its_median_is_the_usual_one():
    for values in ([3.0], [2.0, 1.0], [5.0, 1.0, 4.0], [0.5, 9.0, 2.0, 7.5]):
        assert median(values) == statistics.median(values)
    assert median([None, 2.0, 4.0]) == 3.0 and median([None]) is None  # runs that measured nothing left out
    latencies = [float(ms) for ms in range(1, 101)]  # 1..100 ms, in any order
    assert percentile(latencies[::-1], 0.99) == pytest.approx(99.01) and percentile(latencies, 1.0) == 100.0


def test_import_profile_sums_own_times_by_top_level_package():
    real = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import json, email.mime.text"], capture_output=True, text=True
    )
    profile = import_profile(real.stderr)
    assert {"json", "email"} <= set(profile["by_package"]) and profile["total_s"] > 0
    assert profile["torchmetrics_chain_s"] == 0.0  # no torchmetrics here
    made_up = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       300 |        300 |     torchvision.models",
            "import time:       200 |        500 |   torchmetrics.functional",
            "import time:       100 |        600 | torchmetrics",
            "some other line",
        ]
    )
    assert import_profile(made_up) == {
        "total_s": 0.0,  # 600 us
        "by_package": {"torchvision": 0.0, "torchmetrics": 0.0},
        "torchmetrics_chain_s": 0.0,
    }
    scaled = made_up.replace("00 |", "0000 |")  # the same tree in tens of milliseconds
    assert import_profile(scaled) == {
        "total_s": 0.06,
        "by_package": {"torchvision": 0.03, "torchmetrics": 0.03},
        "torchmetrics_chain_s": 0.05,
    }


def test_epoch_profile_splits_the_epoch_into_shares(tmp_path):
    rows = [
        ("run_training_epoch", 10.0),
        ("run_training_batch", 9.0),
        ("[Strategy]SingleDeviceStrategy.training_step", 3.0),
        ("[Strategy]SingleDeviceStrategy.backward", 5.0),
        ("[Strategy]SingleDeviceStrategy.validation_step", 0.4),
        ("[_EvaluationLoop].val_next", 0.1),
        ("[Callback]EpochThroughput.on_train_batch_end", 0.2),
    ]
    lines = ["FIT Profiler Report", "", "-" * 40, "|  Action  |  Mean duration (s)  |  Num calls  |  Total time (s)  |"]
    lines[-1] += "  Percentage %  |"
    lines += ["-" * 40, "|  Total  |  -  |  100  |  10.0  |  100 %  |", "-" * 40]
    lines += [f"|  {name}\t|  0.1\t|  10\t|  {total}\t|  {total * 10}\t|" for name, total in rows]
    report = tmp_path / "fit-profile.txt"
    report.write_text("\n".join(lines) + "\n")
    assert epoch_profile(report) == {
        "epoch_s": 10.0,
        "forward_pct": 30.0,
        "backward_pct": 50.0,
        "optimizer_pct": 10.0,
        "validation_pct": 5.0,
        "outside_steps_pct": 5.0,
    }


def test_epoch_profile_refuses_validation_from_outside_the_epoch(tmp_path):
    rows = [("run_training_epoch", 2.0), ("run_training_batch", 1.8)]
    rows.append(("[Strategy]SingleDeviceStrategy.validation_step", 0.5))  # 0.3 s of it from the sanity check
    report = tmp_path / "fit-profile.txt"
    report.write_text("\n".join(f"|  {name}\t|  0.1\t|  10\t|  {total}\t|  1\t|" for name, total in rows) + "\n")
    with pytest.raises(ValueError, match="num_sanity_val_steps=0"):
        epoch_profile(report)
