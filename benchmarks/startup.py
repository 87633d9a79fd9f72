"""Fixed costs: launch to the first training step, the import time behind it, and where an epoch goes."""

from __future__ import annotations

from benchmarks.harness import Bench, log, median
from benchmarks.parsers import epoch_profile, import_profile
from benchmarks.report import row


def startup(bench: Bench) -> list[dict]:
    """Fixed costs: launch to the first training step (ours and the baseline's), the import time behind it by
    package (`python -X importtime`), and where a training epoch goes (Lightning's SimpleProfiler)."""
    ours, base = [], []
    for i in range(bench.repeats):
        b = bench.baseline(f"baseline_startup_{i}", "--epochs", "1", "--limit-batches", "20")
        base.append(round(b["epochs"][0]["first_step_unix_time"] - b["launched_at"], 2))
        o = bench.train(f"startup_{i}", ["trainer.max_epochs=1", "trainer.limit_train_batches=20"])
        ours.append(round(o["metrics"]["first_step_at"] - o["launched_at"], 2))
        log(f"   first step after {ours[-1]} s (baseline {base[-1]} s)")
    imports = import_times(bench)
    log(f"   imports {imports}")
    # the floor under the first step: what importing Lightning costs beside the baseline's own imports
    lightning, plain = [], []
    for i in range(bench.repeats):
        lightning.append(round(bench.child(f"import_lightning_{i}", ["-c", "import lightning.pytorch"])["wall_s"], 2))
        plain.append(round(bench.child(f"import_torch_{i}", ["-c", "import torch, torchvision"])["wall_s"], 2))
    log(f"   import lightning.pytorch {lightning} s, torch + torchvision {plain} s")
    limit = ["trainer.limit_train_batches=20", "trainer.limit_val_batches=2"] if bench.quick else []
    # no sanity-check batches: they would count as validation that happens outside the epoch
    overrides = ["trainer.max_epochs=1", "trainer.profiler=simple", "trainer.num_sanity_val_steps=0", *limit]
    profiled = bench.train("profiled_epoch", overrides)
    epoch = epoch_profile(profiled["run_dir"] / "profile" / "fit-profile.txt")
    log(f"   epoch {epoch}")
    top = ", ".join(f"{name} {seconds} s" for name, seconds in list(imports["by_package"].items())[:6])
    return [
        row(
            "startup",
            "launch to the first training step (s)",
            median(ours),
            median(base),
            "s",
            target="<= the baseline",
            met=median(ours) <= median(base),
            method=f"median of {bench.repeats}; ours: the default config (metrics.json first_step_at), the "
            f"baseline: benchmarks/reference.py; both from process launch",
            runs={"ours": ours, "baseline": base},
        ),
        row(
            "startup",
            "python -c 'import lightning.pytorch' against 'import torch, torchvision' (s)",
            median(lightning),
            median(plain),
            "s",
            method=f"median of {bench.repeats}, process start to exit: the imports the baseline also makes, and "
            f"what Lightning adds to them (it imports torchmetrics to read its version, torchmetrics imports "
            f"matplotlib.pyplot and torchvision.models); the rest of the first row's gap is ours",
            runs={"ours": lightning, "baseline": plain},
        ),
        row(
            "startup",
            "import time of a training process (s)",
            imports["total_s"],
            unit="s",
            method=f"python -X importtime -m mnist_lightning.train (a 2-step run), own time of every module summed "
            f"by top-level package: {top}. Of it, {imports['torchmetrics_chain_s']} s is "
            f"lightning -> torchmetrics.functional -> torchvision.models -> torch._dynamo (not ours to cut)",
            runs=imports,
        ),
        row(
            "startup",
            "share of a training epoch outside the training steps (%)",
            epoch["outside_steps_pct"],
            unit="%",
            method=f"trainer.profiler=simple, one epoch of the default config: {epoch['epoch_s']} s in "
            f"run_training_epoch, of it forward {epoch['forward_pct']}%, backward {epoch['backward_pct']}%, "
            f"optimizer and the rest of the step {epoch['optimizer_pct']}%, validation {epoch['validation_pct']}%, "
            f"everything else (data, callbacks, logging, checkpoints) {epoch['outside_steps_pct']}%",
            runs=epoch,
        ),
    ]


def import_times(bench: Bench) -> dict:
    """Seconds of import in a short training process, by top-level package (each module's own time)."""
    run_dir = bench.scratch / "importtime"
    args = ["-X", "importtime", "-m", "mnist_lightning.train", f"hydra.run.dir={run_dir}"]
    args += ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    args += ["trainer.limit_test_batches=1", "trainer.enable_progress_bar=false"]
    bench.child("importtime", args)
    return import_profile((bench.scratch / "importtime.err").read_text())
