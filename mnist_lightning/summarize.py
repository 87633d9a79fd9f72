"""Compare runs: `python -m mnist_lightning.summarize [DIR]` (`make summary`).

One row per training run under DIR (a sweep folder, or all of outputs/): the overrides that differ
between the runs, best val acc, test acc, epochs, wall time and state, best first. Runs that differ
only in `seed` are also aggregated as mean ± std. Written as summary.csv and summary.md in DIR.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from mnist_lightning import runs

COLUMNS = ["run", "overrides", "val/acc_best", "test/acc", "epochs", "wall_time_s", "state"]
# overrides that say how a run was launched, not what it trained
IGNORED = ("optuna_trial=", "hydra.", "hparams_search=", "trainer.enable_progress_bar=", "callbacks.progress_bar=")


def collect(root: Path) -> list[dict]:
    rows = []
    for run_dir in runs.find_training_runs(root):
        metrics = runs.read_metrics(run_dir) or {}
        overrides = [o for o in runs.read_overrides(run_dir) if not o.startswith(IGNORED)]
        rows.append({
            "run": str(run_dir.relative_to(root)) or ".",
            "overrides": overrides,
            "val/acc_best": metrics.get("val/acc_best"),
            "test/acc": metrics.get("test/acc"),
            "epochs": metrics.get("epochs"),
            "wall_time_s": metrics.get("wall_time_s"),
            "state": metrics.get("state") or ("running" if runs.lock_holder(run_dir) else "incomplete"),
        })
    differing = _differing_keys([r["overrides"] for r in rows])
    for row in rows:
        row["overrides"] = " ".join(o for o in row["overrides"] if _key(o) in differing)
    rows.sort(key=lambda r: (r["state"] != "finished", -(r["val/acc_best"] or 0), r["run"]))
    return rows


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _differing_keys(override_lists: list[list[str]]) -> set[str]:
    values = defaultdict(set)
    for overrides in override_lists:
        present = {_key(o): o for o in overrides}
        for key in {k for ol in override_lists for k in map(_key, ol)}:
            values[key].add(present.get(key))
    return {key for key, seen in values.items() if len(seen) > 1}


def seed_groups(rows: list[dict]) -> list[dict]:
    """Mean ± std of runs that differ only in seed (finished runs only)."""
    groups = defaultdict(list)
    for row in rows:
        if row["state"] == "finished":
            rest = " ".join(o for o in row["overrides"].split() if _key(o) != "seed")
            groups[rest].append(row)
    out = []
    for rest, members in groups.items():
        seeds = {o for r in members for o in r["overrides"].split() if _key(o) == "seed"}
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
        lines += ["", "Across seeds (mean ± std):", "", "| overrides | runs | val/acc_best | test/acc |",
                  "|---|---|---|---|"]
        lines += [f"| {g['overrides']} | {g['runs']} | {_fmt(g['val/acc_best'])} | {_fmt(g['test/acc'])} |"
                  for g in groups]
    return "\n".join(lines) + "\n"


def summarize(root: Path) -> tuple[list[dict], list[dict]]:
    rows = collect(root)
    groups = seed_groups(rows)
    if rows:
        with open(root / "summary.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        runs.atomic_write_text(root / "summary.md", markdown(rows, groups))
    return rows, groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnist_lightning.summarize", description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default="outputs", help="a sweep folder or outputs/ (default)")
    args = parser.parse_args(argv)
    root = Path(args.dir)
    if not root.is_dir():
        print(f"error: {root} is not a folder; give a sweep folder or outputs/", file=sys.stderr)
        return 2
    rows, groups = summarize(root)
    if not rows:
        print(f"error: no training runs under {root}; run `make train` or a sweep first", file=sys.stderr)
        return 1
    print(markdown(rows, groups), end="")
    print(f"\n{len(rows)} runs; written to {root / 'summary.csv'} and {root / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
