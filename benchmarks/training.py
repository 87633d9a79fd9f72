"""Training figures: one epoch of the baseline, of our default config and of our raw loop, and our throughput
against the fastest hand-written loop."""

from __future__ import annotations

from benchmarks.harness import Bench, log, median
from benchmarks.report import row


def training(bench: Bench) -> list[dict]:
    """One epoch (55,000 train + 5,000 val) of the baseline, our default config, and our raw loop."""
    base, ours, raw, fastest = [], [], [], []
    raw_limit = ["--limit-batches", "20", "--limit-val-batches", "2"] if bench.quick else []
    variants_limit = ["--steps", "20"] if bench.quick else []
    for i in range(bench.repeats):  # interleaved, so that all of them see the same machine
        b = bench.baseline(f"baseline_epoch_{i}", "--epochs", "1")
        base.append(
            {
                "epoch_s": b["epochs"][0]["epoch_s"],
                "samples_per_s": b["epochs"][0]["train_samples_per_s"],
                "rss_mb": b["rss_mb"],
                "test_acc": b["epochs"][0]["test_acc"],
            }
        )
        log(f"   baseline {base[-1]}")
        o = bench.train(f"ours_epoch_{i}", ["trainer.max_epochs=1"])
        m = o["metrics"]
        ours.append(
            {
                "epoch_s": m["epoch_time_s"][0],
                "samples_per_s": m["train_samples_per_s"][0],
                "rss_mb": o["rss_mb"],
                "test_acc": m["test/acc"],
                "precision": m["precision"],
            }
        )
        log(f"   ours     {ours[-1]}")
        bench.checkpoint = o["run_dir"] / m["best_checkpoint"]
        r = bench.script(f"raw_epoch_{i}", "raw_loop.py", "--epochs", "1", *raw_limit)
        raw.append({"epoch_s": r["epochs"][0]["epoch_s"], "samples_per_s": r["epochs"][0]["train_samples_per_s"]})
        log(f"   raw loop {raw[-1]}")
        found = bench.script(f"raw_variants_{i}", "raw_loop.py", "--variants", *variants_limit)["records"]
        fastest.append({"variants": [f for f in found if "variant" in f], **found[-1]["best"]})
        log(f"   hand-written, fastest {fastest[-1]['variant']}: {fastest[-1]['train_samples_per_s']} samples/s")
    pick = lambda runs, key: median([r[key] for r in runs])  # noqa: E731
    epoch_ours, epoch_base, epoch_raw = pick(ours, "epoch_s"), pick(base, "epoch_s"), pick(raw, "epoch_s")
    speedup = epoch_base / epoch_ours
    overhead = epoch_ours / epoch_raw - 1
    rss_ratio = pick(ours, "rss_mb") / pick(base, "rss_mb")
    note = f"median of {bench.repeats}; default config with trainer.max_epochs=1 (precision {ours[0]['precision']})"
    return [
        row(
            "training",
            "epoch time, 55,000 train + 5,000 val (s)",
            epoch_ours,
            epoch_base,
            "s",
            target=">= 2.0x faster",
            met=speedup >= 2.0,
            method=note,
            runs={"ours": ours, "baseline": base},
        ),
        row(
            "training",
            "training throughput (samples/s)",
            pick(ours, "samples_per_s"),
            pick(base, "samples_per_s"),
            "samples/s",
            better="higher",
            method=note,
        ),
        row(
            "training",
            "Trainer vs raw loop on our data path, epoch time (s)",
            epoch_ours,
            epoch_raw,
            "s",
            target="<= 5% slower",
            met=overhead <= 0.05,
            method=f"{note}; raw loop: benchmarks/raw_loop.py. Overhead {overhead:+.1%}",
            runs={"raw": raw},
        ),
        row(
            "training",
            "training throughput vs the fastest hand-written loop (samples/s)",
            pick(ours, "samples_per_s"),
            pick(fastest, "train_samples_per_s"),
            "samples/s",
            better="higher",
            target=">= 0.9x",
            met=pick(ours, "samples_per_s") >= 0.9 * pick(fastest, "train_samples_per_s"),
            method=f"{note}; the loop: benchmarks/raw_loop.py --variants, the seed CNN, Adam, batch 64, batches "
            f"already in memory, no validation, in each format and precision this machine runs natively; "
            f"fastest: {fastest[0]['variant']}",
            runs={"fastest": fastest},
        ),
        row(
            "training",
            "peak RSS of a training run (MB)",
            pick(ours, "rss_mb"),
            pick(base, "rss_mb"),
            "MB",
            target="<= 1.2x the baseline",
            met=rss_ratio <= 1.2,
            method=f"{note}; RSS of the whole process (wait4). Ratio ours/baseline {rss_ratio:.2f}",
        ),
    ]
