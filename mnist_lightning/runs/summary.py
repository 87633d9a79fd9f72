"""A table of training runs: one row per run, the overrides that differ between them, their results.

Runs that differ only in `seed` are also aggregated as mean ± std.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from mnist_lightning.runs import atomic, layout, record
from mnist_lightning.runs.lock import lock_holder

# partial: validated or tested on part of its split (debug presets, trainer.limit_*_batches), not comparable
COLUMNS = ["run", "overrides", "val/acc_best", "test/acc", "partial", "epochs", "wall_time_s", "state"]
# overrides that say how a run was launched, not what it trained
LAUNCH_KEYS = ("optuna_trial", "hparams_search", "trainer.enable_progress_bar", "callbacks.progress_bar")


def _keyed(overrides: list[str]) -> dict[str, str]:
    """{key: override as written}, by Hydra's own parser; launch settings and hydra.* left out."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # a folder whose overrides.yaml was edited by hand: show it as written
        return {o: o for o in overrides}
    return {
        o.key_or_group: o.input_line
        for o in parsed
        if not o.key_or_group.startswith("hydra.") and o.key_or_group not in LAUNCH_KEYS
    }


def collect(root: Path) -> list[dict]:
    rows, keyed = [], []
    for run in layout.training_runs(root):
        keyed.append(_keyed(layout.read_overrides(run.path)))
        rows.append(
            {
                "run": str(run.path.relative_to(root)) or ".",
                "val/acc_best": run.metrics.get("val/acc_best"),
                "test/acc": run.metrics.get("test/acc"),
                "partial": "yes" if record.is_partial(run.metrics) else "",
                "epochs": run.metrics.get("epochs"),
                "wall_time_s": run.metrics.get("wall_time_s"),
                "state": run.state or ("running" if lock_holder(run.path) else "incomplete"),
                "error": " ".join(str(run.metrics.get("error") or "").split()),
            }
        )
    differing = {
        key
        for key in {k for overrides in keyed for k in overrides}
        if len({overrides.get(key) for overrides in keyed}) > 1
    }
    for row, overrides in zip(rows, keyed, strict=True):
        row["overrides"] = " ".join(v for k, v in overrides.items() if k in differing)
        row["_keys"] = {k: v for k, v in overrides.items() if k in differing}
    rows.sort(key=lambda r: (r["state"] != "finished", bool(r["partial"]), -(r["val/acc_best"] or 0), r["run"]))
    return rows


def seed_groups(rows: list[dict]) -> list[dict]:
    """Mean ± std of finished runs that differ only in seed (so also in nothing that limits their evaluation)."""
    groups = defaultdict(list)
    for row in rows:
        if row["state"] == "finished":
            rest = " ".join(v for k, v in row["_keys"].items() if k != "seed")
            groups[rest].append(row)
    out = []
    for rest, members in groups.items():
        seeds = {r["_keys"].get("seed") for r in members}
        if len(members) < 2 or len(seeds) < 2:
            continue
        entry = {"overrides": rest or "(defaults)", "runs": len(members)}
        for metric in ("val/acc_best", "test/acc"):
            values = [r[metric] for r in members if r[metric] is not None]
            entry[metric] = (statistics.mean(values), statistics.stdev(values)) if len(values) > 1 else None
        out.append(entry)
    return out


def _fmt(value, column: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return f"{100 * value[0]:.2f} ± {100 * value[1]:.2f}%"
    if column in ("val/acc_best", "test/acc"):
        return f"{100 * value:.2f}%"
    if column == "wall_time_s":
        return f"{value:.1f}"
    return str(value)


def markdown(rows: list[dict], groups: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c], c) for c in COLUMNS) + " |" for r in rows]
    if groups:
        lines += [
            "",
            "Across seeds (mean ± std):",
            "",
            "| overrides | runs | val/acc_best | test/acc |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {g['overrides']} | {g['runs']} | {_fmt(g['val/acc_best'])} | {_fmt(g['test/acc'])} |" for g in groups
        ]
    failed = [r for r in rows if r["state"] == "failed"]
    if failed:
        lines += ["", f"Failed ({len(failed)} of {len(rows)} runs):", ""]
        lines += [f"- {r['run']}: {r['error'] or 'no error recorded'}" for r in failed]
    return "\n".join(lines) + "\n"


def summarize(root: Path) -> tuple[list[dict], list[dict]]:
    """The rows and seed groups of the runs under `root`, also written there as summary.csv and summary.md."""
    rows = collect(root)
    groups = seed_groups(rows)
    if rows:
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=[*COLUMNS, "error"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic.write_text(root / "summary.csv", table.getvalue())
        atomic.write_text(root / "summary.md", markdown(rows, groups))
    return rows, groups
