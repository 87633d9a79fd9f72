"""Readers of what the measured processes leave behind: JSON lines, `python -X importtime`, SimpleProfiler."""

from __future__ import annotations

import json
from pathlib import Path


def json_lines(lines: list[str]) -> list[dict]:
    """The JSON objects among a child's stdout lines (reference.py and raw_loop.py print one per epoch or variant,
    then a summary)."""
    return [json.loads(line) for line in lines if line.startswith("{")]


def import_profile(stderr: str) -> dict:
    """`python -X importtime` output summed by top-level package (each module's own time), in seconds."""
    by_package: dict[str, int] = {}
    cumulative = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2 or "self [us]" in line:
            continue
        own, total, name = line.removeprefix("import time:").split("|")
        cumulative[name.strip()] = int(total)
        package = name.strip().split(".")[0]
        by_package[package] = by_package.get(package, 0) + int(own)
    ordered = sorted(by_package.items(), key=lambda item: -item[1])
    return {
        "total_s": round(sum(by_package.values()) / 1e6, 2),
        "by_package": {name: round(us / 1e6, 2) for name, us in ordered[:12]},
        "torchmetrics_chain_s": round(cumulative.get("torchmetrics.functional", 0) / 1e6, 2),
    }


def epoch_profile(report: Path) -> dict:
    """Where one training epoch went, from SimpleProfiler's report (one row per action: name | mean | calls |
    total | percent)."""
    totals = {}
    for line in report.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[3].replace(".", "", 1).replace("e-", "", 1).isdigit():
            totals[cells[0]] = totals.get(cells[0], 0.0) + float(cells[3])
    epoch = totals["run_training_epoch"]

    def share(*names: str) -> float:
        return sum(v for k, v in totals.items() if any(k.endswith(n) for n in names))

    forward, backward = share("Strategy.training_step"), share("Strategy.backward")
    steps = totals["run_training_batch"]
    validation = share("Strategy.validation_step", "val_next")
    if steps + validation > epoch * 1.001:
        raise ValueError(
            f"{report}: more validation than fits in the epoch; the sanity-check batches count as validation "
            f"outside it: profile with trainer.num_sanity_val_steps=0"
        )
    pct = lambda seconds: round(100 * seconds / epoch, 2)  # noqa: E731
    return {
        "epoch_s": round(epoch, 2),
        "forward_pct": pct(forward),
        "backward_pct": pct(backward),
        "optimizer_pct": pct(steps - forward - backward),
        "validation_pct": pct(validation),
        "outside_steps_pct": pct(epoch - steps - validation),
    }
