"""The benchmark harness: `make benchmark` (full) or `make benchmark-quick` (tiny limits, a smoke run).

Runs each figure of ours side by side with its baseline, alternating the runs so that both see the
same machine, and takes medians. Writes the results as JSON and renders BENCHMARKS.md from every
results file in benchmarks/results/. Figures that a quick run produces are not comparable: they only
show that the harness works.

    python benchmarks/run.py                      # full: about 30 min on 2 CPU cores
    python benchmarks/run.py --quick --out outputs/benchmarks/quick
    python benchmarks/run.py --only inference,evaluation
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/run.py --only time_to_accuracy
                                                  # an AVX-512 CPU standing in for an AVX2-only one
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STUDIES = ROOT / "benchmarks" / "studies"  # hand-written write-ups of one-off measurements, appended to BENCHMARKS.md
BENCHMARKS = ("training", "time_to_accuracy", "startup", "evaluation", "inference", "runtimes", "serving")
TARGET_ACC = 0.99


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny limits: checks the harness, figures mean nothing")
    parser.add_argument("--repeats", type=int, default=None, help="runs per figure (default 3, quick 1)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
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
        (ROOT / "BENCHMARKS.md").write_text(render([json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]))
        return 0
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if not (Path(args.data_dir) / "MNIST" / "raw").is_dir():
        parser.error(f"--data-dir {args.data_dir}: no MNIST/raw there; set MNIST_DATA_DIR or pass --data-dir")
    repeats = args.repeats or (1 if args.quick else 3)

    from mnist_lightning.runs.lineage import lineage

    info = lineage()
    capped = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(k)}
    if capped:  # kernels limited to an older instruction set, to stand in for an older CPU: a section of its own
        info["machine"]["limited_to"] = ", ".join(f"{k}={v}" for k, v in capped.items())
    bench = Bench(Path(args.data_dir), quick=args.quick, repeats=repeats)
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
        bench.scratch = Path(scratch)
        for name in only:
            started = time.perf_counter()
            log(f"== {name}")
            results["rows"] += getattr(bench, name)()
            log(f"   {name} took {time.perf_counter() - started:.0f} s")

    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "BENCHMARKS.md").write_text(render([results]))
        log(f"wrote {out / 'results.json'} and {out / 'BENCHMARKS.md'}")
    else:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{slug(info['machine'])}.json"
        if path.is_file() and set(only) != set(BENCHMARKS):  # a partial run replaces only its own rows
            previous = json.loads(path.read_text())
            kept = [r for r in previous["rows"] if r["benchmark"] not in only]
            results["rows"] = kept + results["rows"]
            results["partial"] = {name: results["date"] for name in only}
            results["partial"] = {**previous.get("partial", {}), **results["partial"]}
            results["earlier"] = previous.get("earlier") or {k: previous[k] for k in ("date", "git_commit")}
            results["rows"].sort(key=lambda r: BENCHMARKS.index(r["benchmark"]))
        path.write_text(json.dumps(results, indent=2) + "\n")
        all_results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
        (ROOT / "BENCHMARKS.md").write_text(render(all_results))
        log(f"wrote {path} and {ROOT / 'BENCHMARKS.md'}")
    print(render([results]))
    return 0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def title(machine: dict) -> str:
    """The machine's name: its accelerator, else its CPU, and any instruction-set limit the run was under."""
    name = machine.get("accelerator") or machine.get("cpu") or "machine"
    return f"{name} limited to {machine['limited_to']}" if machine.get("limited_to") else name


def slug(machine: dict) -> str:
    name = title(machine)
    text = "".join(c if c.isalnum() else "-" for c in name.lower())
    return "-".join(part for part in text.split("-") if part)[:100]


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def row(
    benchmark: str,
    figure: str,
    ours,
    baseline=None,
    unit: str = "",
    better: str = "lower",
    target: str = "",
    met: bool | None = None,
    method: str = "",
    runs: dict | None = None,
) -> dict:
    ratio = None
    if isinstance(ours, (int, float)) and isinstance(baseline, (int, float)) and ours and baseline:
        ratio = baseline / ours if better == "lower" else ours / baseline  # > 1: ours is better
    return {
        "benchmark": benchmark,
        "figure": figure,
        "ours": ours,
        "baseline": baseline,
        "unit": unit,
        "ratio": round(ratio, 3) if ratio else None,
        "better": better,
        "target": target,
        "met": met,
        "method": method,
        "runs": runs or {},
    }


class Bench:
    def __init__(self, data_dir: Path, quick: bool, repeats: int):
        self.data_dir, self.quick, self.repeats = data_dir.resolve(), quick, repeats
        self.scratch = Path(tempfile.gettempdir())
        self.checkpoint: Path | None = None  # a checkpoint of ours, for the inference figures
        self.env = {**os.environ, "MNIST_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1"}

    # -- running children -------------------------------------------------------------------------------------

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

    def baseline(self, name: str, *args: str) -> dict:
        """benchmarks/reference.py with these arguments (e.g. "--epochs", "1"); quick runs add small limits."""
        limit = ["--limit-batches", "20", "--eval-limit", "1000"] if self.quick else []
        got = self.child(name, ["benchmarks/reference.py", "--data-dir", str(self.data_dir), *args, *limit])
        got["epochs"] = [json.loads(line) for line in got["lines"] if line.startswith('{"epoch"')]
        return got

    def train(self, name: str, overrides: list[str]) -> dict:
        run_dir = self.scratch / name
        limits = (
            [
                "trainer.limit_train_batches=20",
                "trainer.limit_val_batches=2",
                "trainer.limit_test_batches=2",
                "trainer.num_sanity_val_steps=0",
            ]
            if self.quick
            else []
        )
        got = self.child(
            name,
            [
                "-m",
                "mnist_lightning.train",
                f"hydra.run.dir={run_dir}",
                "trainer.enable_progress_bar=false",
                *overrides,
                *limits,
            ],
        )
        got["metrics"] = json.loads((run_dir / "metrics.json").read_text())
        got["run_dir"] = run_dir
        return got

    def raw(self, name: str) -> dict:
        limit = ["--limit-batches", "20", "--limit-val-batches", "2"] if self.quick else []
        got = self.child(name, ["benchmarks/raw_loop.py", "--data-dir", str(self.data_dir), "--epochs", "1", *limit])
        got["epochs"] = [json.loads(line) for line in got["lines"] if line.startswith('{"epoch"')]
        return got

    # -- the benchmarks ---------------------------------------------------------------------------------------

    def training(self) -> list[dict]:
        """One epoch (55,000 train + 5,000 val) of the baseline, our default config, and our raw loop."""
        base, ours, raw, fastest = [], [], [], []
        for i in range(self.repeats):  # interleaved, so that all of them see the same machine
            b = self.baseline(f"baseline_epoch_{i}", "--epochs", "1")
            base.append(
                {
                    "epoch_s": b["epochs"][0]["epoch_s"],
                    "samples_per_s": b["epochs"][0]["train_samples_per_s"],
                    "rss_mb": b["rss_mb"],
                    "test_acc": b["epochs"][0]["test_acc"],
                }
            )
            log(f"   baseline {base[-1]}")
            o = self.train(f"ours_epoch_{i}", ["trainer.max_epochs=1"])
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
            self.checkpoint = o["run_dir"] / m["best_checkpoint"]
            r = self.raw(f"raw_epoch_{i}")
            raw.append({"epoch_s": r["epochs"][0]["epoch_s"], "samples_per_s": r["epochs"][0]["train_samples_per_s"]})
            log(f"   raw loop {raw[-1]}")
            v = self.child(
                f"raw_variants_{i}",
                ["benchmarks/raw_loop.py", "--variants", "--data-dir", str(self.data_dir)]
                + (["--steps", "20"] if self.quick else []),
            )
            found = [json.loads(line) for line in v["lines"] if line.startswith("{")]
            fastest.append({"variants": [f for f in found if "variant" in f], **found[-1]["best"]})
            log(f"   hand-written, fastest {fastest[-1]['variant']}: {fastest[-1]['train_samples_per_s']} samples/s")
        pick = lambda runs, key: median([r[key] for r in runs])  # noqa: E731
        epoch_ours, epoch_base, epoch_raw = pick(ours, "epoch_s"), pick(base, "epoch_s"), pick(raw, "epoch_s")
        speedup = epoch_base / epoch_ours
        overhead = epoch_ours / epoch_raw - 1
        rss_ratio = pick(ours, "rss_mb") / pick(base, "rss_mb")
        note = f"median of {self.repeats}; default config with trainer.max_epochs=1 (precision {ours[0]['precision']})"
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

    def time_to_accuracy(self) -> list[dict]:
        """Whole-process time to >= 99% test accuracy: the baseline epoch by epoch (tested after each) until it
        gets there, against `experiment=fast` on 5 seeds, all in the same run."""
        seeds = (1,) if self.quick else (1, 2, 3, 4, 5)
        baseline_args = ["--epochs", "1"] if self.quick else ["--epochs", "10", "--until-acc", str(TARGET_ACC)]
        b = self.baseline("baseline_to_99", *baseline_args)
        reached = [e for e in b["epochs"] if e["test_acc"] >= TARGET_ACC]
        base_time = round(reached[0]["unix_time"] - b["launched_at"], 2) if reached else None
        base_note = (
            f"the baseline reached {reached[0]['test_acc']:.2%} after epoch {reached[0]['epoch']} "
            f"({reached[0]['training_time_s']} s of it training and validating)"
            if reached
            else f"the baseline never reached 99% in {len(b['epochs'])} epochs "
            f"(best {max(e['test_acc'] for e in b['epochs']):.2%})"
        )
        log(f"   baseline {base_note}, {b['epochs']}")
        ours = []
        for seed in seeds:
            o = self.train(f"fast_seed_{seed}", ["experiment=fast", f"seed={seed}"])
            m = o["metrics"]
            ours.append(
                {
                    "seed": seed,
                    "wall_s": round(o["wall_s"], 2),
                    "test_acc": m["test/acc"],
                    "epochs": m["epochs"],
                    "train_samples_per_s": m["train_samples_per_s"],
                    "first_step_s": round(m["first_step_at"] - o["launched_at"], 2) if m.get("first_step_at") else None,
                }
            )
            log(f"   fast     {ours[-1]}")
        accs = [r["test_acc"] or 0.0 for r in ours]
        all_reached = min(accs) >= TARGET_ACC
        ours_time = median([r["wall_s"] for r in ours])
        met = all_reached and base_time is not None and ours_time <= 0.2 * base_time
        return [
            row(
                "time_to_accuracy",
                "time to >= 99.0% test accuracy, whole process (s), median of seeds",
                ours_time,
                base_time,
                "s",
                target="<= 0.2x the baseline, every seed >= 99%",
                met=met,
                method=f"ours: experiment=fast, seeds {list(seeds)}: test accuracy "
                f"{', '.join(f'{a:.2%}' for a in accs)}, whole process {[r['wall_s'] for r in ours]} s "
                f"(start to exit: imports, data, training, validation, test, checkpoints); {base_note}, its whole "
                f"process up to that epoch's test",
                runs={"ours": ours, "baseline": b["epochs"]},
            ),
        ]

    def startup(self) -> list[dict]:
        """Fixed costs: launch to the first training step (ours and the baseline's), the import time behind it by
        package (`python -X importtime`), and where a training epoch goes (Lightning's SimpleProfiler)."""
        ours, base = [], []
        for i in range(self.repeats):
            b = self.baseline(f"baseline_startup_{i}", "--epochs", "1", "--limit-batches", "20")
            base.append(round(b["epochs"][0]["first_step_unix_time"] - b["launched_at"], 2))
            o = self.train(f"startup_{i}", ["trainer.max_epochs=1", "trainer.limit_train_batches=20"])
            ours.append(round(o["metrics"]["first_step_at"] - o["launched_at"], 2))
            log(f"   first step after {ours[-1]} s (baseline {base[-1]} s)")
        imports = self.import_times()
        log(f"   imports {imports}")
        limit = ["trainer.limit_train_batches=20", "trainer.limit_val_batches=2"] if self.quick else []
        # no sanity-check batches: they would count as validation that happens outside the epoch
        overrides = ["trainer.max_epochs=1", "trainer.profiler=simple", "trainer.num_sanity_val_steps=0", *limit]
        profiled = self.train("profiled_epoch", overrides)
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
                method=f"median of {self.repeats}; ours: the default config (metrics.json first_step_at), the "
                f"baseline: benchmarks/reference.py; both from process launch",
                runs={"ours": ours, "baseline": base},
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

    def import_times(self) -> dict:
        """Seconds of import in a short training process, by top-level package (each module's own time)."""
        run_dir = self.scratch / "importtime"
        args = ["-X", "importtime", "-m", "mnist_lightning.train", f"hydra.run.dir={run_dir}"]
        args += ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
        args += ["trainer.limit_test_batches=1", "trainer.enable_progress_bar=false"]
        self.child("importtime", args)
        return import_profile((self.scratch / "importtime.err").read_text())

    def evaluation(self) -> list[dict]:
        """10,000 test images: torchvision dataset + per-sample transforms vs our evaluate pipeline's inference."""
        import torch
        from torch.utils.data import DataLoader, Subset
        from torchvision import datasets, transforms

        from mnist_lightning.data.datamodule import MNISTDataModule
        from mnist_lightning.inference.runtime import logits_in_batches
        from mnist_lightning.models.cnn import SeedCNN

        network = SeedCNN().eval()
        count = 1000 if self.quick else 10_000

        def baseline() -> float:
            transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
            test = datasets.MNIST(str(self.data_dir), train=False, download=False, transform=transform)
            loader = DataLoader(Subset(test, range(count)), batch_size=1000, num_workers=0)
            correct = 0
            with torch.no_grad():
                for x, y in loader:
                    correct += (network(x).argmax(1) == y).sum().item()
            return correct

        def ours() -> float:
            datamodule = MNISTDataModule(str(self.data_dir), download=False)
            datamodule.setup("test")
            images, labels = datamodule.test_set.images[:count], datamodule.test_set.labels[:count]
            logits = logits_in_batches(network, images, datamodule.eval_batch_size_for("cpu"), torch.device("cpu"))
            return int((logits.argmax(1) == labels).sum())

        times = {"ours": [], "baseline": []}
        for _ in range(1 if self.quick else max(self.repeats, 3)):
            for name, fn in (("baseline", baseline), ("ours", ours)):
                started = time.perf_counter()
                fn()
                times[name].append(round(time.perf_counter() - started, 3))
        o, b = median(times["ours"]), median(times["baseline"])
        log(f"   evaluation {times}")
        return [
            row(
                "evaluation",
                f"{count:,} test images: load + predict (s)",
                o,
                b,
                "s",
                target=">= 3x faster",
                met=b / o >= 3,
                method=f"median of {len(times['ours'])}, in one process; ours: "
                "MNISTDataModule.setup('test') (md5-checked) + runtime.logits_in_batches in batches of "
                f"{MNISTDataModule(str(self.data_dir)).eval_batch_size_for('cpu')}",
                runs=times,
            )
        ]

    def inference(self) -> list[dict]:
        """Single-image latency with preprocessing, batched throughput, and the CLI's cold start."""
        import torch

        from mnist_lightning.inference import preprocess
        from mnist_lightning.inference.runtime import logits_in_batches, probabilities
        from mnist_lightning.models.checkpoint import load_network

        checkpoint = self.checkpoint or self._fresh_checkpoint()
        network = load_network(checkpoint)
        images = sorted(p for p in (ROOT / "examples").iterdir() if p.suffix in (".png", ".jpg", ".gif"))
        decoded = [preprocess.open_image(p) for p in images]

        def one(index: int) -> None:
            image = preprocess.open_image(images[index % len(images)])
            probabilities(network, [preprocess.prepare(image).digit])

        for i in range(20):
            one(i)
        n = 100 if self.quick else 2000
        latencies = []
        for i in range(n):
            started = time.perf_counter()
            one(i)
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        p50, p99 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]

        batch = [decoded[i % len(decoded)] for i in range(256)]
        rates = []
        for _ in range(3 if self.quick else 10):
            started = time.perf_counter()
            probabilities(network, [preprocess.prepare(image).digit for image in batch])
            rates.append(len(batch) / (time.perf_counter() - started))
        tensors = torch.randint(0, 256, (1000 if self.quick else 10_000, 28, 28), dtype=torch.uint8)
        started = time.perf_counter()
        logits_in_batches(network, tensors, 64, torch.device("cpu"))
        model_rate = len(tensors) / (time.perf_counter() - started)

        cold = []
        for i in range(self.repeats):
            got = self.child(
                f"predict_cold_{i}",
                [
                    "-m",
                    "mnist_lightning.predict",
                    f"image={images[0]}",
                    f"ckpt_path={checkpoint}",
                    "visualize=false",
                    f"hydra.run.dir={self.scratch / f'predict_{i}'}",
                ],
            )
            cold.append(round(got["wall_s"], 3))
        log(f"   inference p50 {p50:.2f} ms, p99 {p99:.2f} ms, batch {median(rates):.0f}/s, cold {cold}")
        method = f"{n} calls on the example images, file open + preprocess + forward, 1 image each"
        return [
            row(
                "inference",
                "single image, p50 (ms)",
                round(p50, 3),
                unit="ms",
                target="< 2 ms",
                met=p50 < 2,
                method=method,
            ),
            row(
                "inference",
                "single image, p99 (ms)",
                round(p99, 3),
                unit="ms",
                target="< 5 ms",
                met=p99 < 5,
                method=method,
            ),
            row(
                "inference",
                "batch of 256 images, preprocess + forward (images/s)",
                round(median(rates), 1),
                unit="images/s",
                better="higher",
                method="median of batches of decoded example images",
            ),
            row(
                "inference",
                f"model only, {len(tensors):,} prepared images (images/s)",
                round(model_rate, 1),
                unit="images/s",
                better="higher",
                method="logits_in_batches in batches of 64 (the CPU default)",
            ),
            row(
                "inference",
                "cold start: python -m mnist_lightning.predict, one image (s)",
                median(cold),
                unit="s",
                method=f"process start to exit, median of {len(cold)}, visualize=false",
                runs={"cold": cold},
            ),
        ]

    def runtimes(self) -> list[dict]:
        """One model in PyTorch eager, as its .pt2 and in ONNX Runtime, side by side in one process: single-image
        latency (forward only, and end to end from a 28x28 PNG's bytes), batches of 256, and predict's cold start."""
        import io

        import torch
        from PIL import Image

        from mnist_lightning.data.files import load_split
        from mnist_lightning.inference import artifacts, preprocess
        from mnist_lightning.inference.onnx_runtime import OnnxModel
        from mnist_lightning.inference.runtime import TorchModel
        from mnist_lightning.models.checkpoint import load_network

        checkpoint = self.checkpoint or self._fresh_checkpoint()
        images, labels = load_split(self.data_dir, train=False)
        count = 1000 if self.quick else 10_000
        folder = self.scratch / "export"
        artifacts.export(load_network(checkpoint), checkpoint, folder, images[:count], labels[:count])
        models = {
            "PyTorch eager": TorchModel(load_network(checkpoint)),
            ".pt2": TorchModel(torch.export.load(folder / "model.pt2").module()),
            "ONNX Runtime": OnnxModel(folder / "model.onnx"),
        }

        def png(index: int) -> bytes:
            buffer = io.BytesIO()
            Image.fromarray(images[index].numpy()).save(buffer, "PNG")
            return buffer.getvalue()

        one = png(0)
        digit = preprocess.prepare(preprocess.decode_image(one, "digit.png")).digit
        batch = [preprocess.prepare(preprocess.decode_image(png(i), "digit.png")).digit for i in range(256)]
        n = 100 if self.quick else 2000
        forward, end_to_end, rates = ({name: [] for name in models} for _ in range(3))
        for model in models.values():
            for _ in range(20):
                model.probabilities([digit])
        for _ in range(self.repeats):  # the runtimes take turns, so that each sees the same machine
            for name, model in models.items():
                for _ in range(n // self.repeats):
                    started = time.perf_counter()
                    model.probabilities([digit])
                    forward[name].append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    model.probabilities([preprocess.prepare(preprocess.decode_image(one, "digit.png")).digit])
                    end_to_end[name].append((time.perf_counter() - started) * 1000)
                for _ in range(3 if self.quick else 10):
                    started = time.perf_counter()
                    model.probabilities(batch)
                    rates[name].append(len(batch) / (time.perf_counter() - started))

        def pct(values: list[float], q: float) -> float:
            values = sorted(values)
            return round(values[min(len(values) - 1, int(len(values) * q))], 3)

        rows = []
        base = "PyTorch eager"
        figures = (
            ("single 28x28 digit, forward only, p50 (ms)", forward, 0.5, "lower"),
            ("single 28x28 digit, forward only, p99 (ms)", forward, 0.99, "lower"),
            ("single 28x28 PNG, bytes to probabilities, p50 (ms)", end_to_end, 0.5, "lower"),
            ("single 28x28 PNG, bytes to probabilities, p99 (ms)", end_to_end, 0.99, "lower"),
        )
        how = (
            f"{n} calls per runtime in {self.repeats} alternating rounds, one process, after 20 warm-up calls; "
            "end to end = decode_image + prepare + probabilities on the bytes of a 28x28 PNG"
        )
        for figure, samples, q, better in figures:
            for name in models:
                baseline = None if name == base else pct(samples[base], q)
                rows.append(
                    row(
                        "runtimes",
                        f"{name}: {figure}",
                        pct(samples[name], q),
                        baseline,
                        "ms",
                        better,
                        method=how if name == base else "",
                    )
                )
        for name in models:
            baseline = None if name == base else round(median(rates[base]), 1)
            rows.append(
                row(
                    "runtimes",
                    f"{name}: batch of 256 prepared digits (images/s)",
                    round(median(rates[name]), 1),
                    baseline,
                    "images/s",
                    "higher",
                    method="median of batches" if name == base else "",
                )
            )
        fastest = min(models, key=lambda name: pct(end_to_end[name], 0.5))
        rows.append(
            row(
                "runtimes",
                "fastest runtime, 28x28 PNG bytes to probabilities, p50 (ms)",
                pct(end_to_end[fastest], 0.5),
                unit="ms",
                target="< 2 ms",
                met=pct(end_to_end[fastest], 0.5) < 2,
                method=f"the fastest of the three: {fastest}",
            )
        )

        image_path = self.scratch / "digit.png"
        image_path.write_bytes(one)
        cold = {"torch": [], "onnx": []}
        for i in range(self.repeats):
            for runtime in cold:
                got = self.child(
                    f"predict_{runtime}_{i}",
                    [
                        "-m",
                        "mnist_lightning.predict",
                        f"image={image_path}",
                        f"ckpt_path={checkpoint}",
                        f"runtime={runtime}",
                        f"export_dir={folder}",
                        "visualize=false",
                        f"hydra.run.dir={self.scratch / f'predict_{runtime}_{i}'}",
                    ],
                )
                cold[runtime].append(round(got["wall_s"], 3))
        log(f"   runtimes: e2e p50 {[pct(end_to_end[m], 0.5) for m in models]} ms, cold start {cold}")
        rows.append(
            row(
                "runtimes",
                "cold start: predict runtime=onnx vs runtime=torch, one image (s)",
                median(cold["onnx"]),
                median(cold["torch"]),
                "s",
                method=f"process start to exit, median of {self.repeats}, alternating; runtime=onnx imports no torch",
                runs=cold,
            )
        )
        return rows

    def serving(self) -> list[dict]:
        """`python -m mnist_lightning.serve` over HTTP on loopback: requests/s and latency of POST /predict with 1
        and 8 concurrent clients, for a 28x28 PNG and a 280x280 canvas-sized PNG (a digit drawn as on the page)."""
        import io
        import socket
        import threading

        import httpx
        from PIL import Image

        from mnist_lightning.data.files import load_split

        checkpoint = self.checkpoint or self._fresh_checkpoint()
        images, _ = load_split(self.data_dir, train=False)
        payloads = {}
        for name, size in (("28x28 PNG", 28), ("280x280 canvas PNG", 280)):
            buffer = io.BytesIO()
            Image.fromarray(images[0].numpy()).resize((size, size), Image.Resampling.BILINEAR).save(buffer, "PNG")
            payloads[name] = buffer.getvalue()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log_file = open(self.scratch / "serve.log", "w")  # noqa: SIM115 - closed after the server stops
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mnist_lightning.serve",
                f"port={port}",
                f"ckpt_path={checkpoint}",
                f"hydra.run.dir={self.scratch / 'serve'}",
            ],
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {(self.scratch / 'serve.log').read_text()[-2000:]}")
                time.sleep(0.2)
            per_client = 10 if self.quick else 200

            def client(payload: bytes, latencies: list[float], lock: threading.Lock) -> None:
                with httpx.Client(base_url=url, timeout=60) as http:
                    http.post("/predict", files={"file": ("d.png", payload)})  # warm the connection
                    for _ in range(per_client):
                        started = time.perf_counter()
                        response = http.post("/predict", files={"file": ("d.png", payload)})
                        elapsed = time.perf_counter() - started
                        response.raise_for_status()
                        with lock:
                            latencies.append(elapsed * 1000)

            rows = []
            for name, payload in payloads.items():
                for clients in (1, 8):
                    rates, p50s, p99s = [], [], []
                    for _ in range(self.repeats):
                        latencies, lock = [], threading.Lock()
                        threads = [
                            threading.Thread(target=client, args=(payload, latencies, lock)) for _ in range(clients)
                        ]
                        started = time.perf_counter()
                        for thread in threads:
                            thread.start()
                        for thread in threads:
                            thread.join()
                        rates.append(len(latencies) / (time.perf_counter() - started))
                        latencies.sort()
                        p50s.append(latencies[len(latencies) // 2])
                        p99s.append(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))])
                    rate, p50, p99 = median(rates), median(p50s), median(p99s)
                    log(f"   serving {name}, {clients} client(s): {rate:.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
                    how = (
                        f"{clients} client thread(s) x {per_client} requests each, httpx keep-alive connections to "
                        f"one server process on 127.0.0.1 (the clients share the machine's cores), after one warm-up "
                        f"request per client; median of {self.repeats} rounds (p50 and p99 too)"
                    )
                    rows += [
                        row(
                            "serving",
                            f"/predict, {name}, {clients} client(s) (requests/s)",
                            round(rate, 1),
                            unit="req/s",
                            better="higher",
                            method=how,
                        ),
                        row("serving", f"/predict, {name}, {clients} client(s), p50 (ms)", round(p50, 2), unit="ms"),
                        row("serving", f"/predict, {name}, {clients} client(s), p99 (ms)", round(p99, 2), unit="ms"),
                    ]
            return rows
        finally:
            server.terminate()
            server.wait(60)
            log_file.close()

    def _fresh_checkpoint(self) -> Path:
        """An untrained network in the training checkpoint format (latency does not depend on the weights)."""
        import torch

        from mnist_lightning.models import build_network

        network = build_network(arch="cnn")
        path = self.scratch / "untrained.ckpt"
        torch.save(
            {
                "hyper_parameters": {"net": {"arch": "cnn"}},
                "state_dict": {f"net.{k}": v for k, v in network.state_dict().items()},
            },
            path,
        )
        return path


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


def render(all_results: list[dict]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make benchmark` (`benchmarks/run.py`) from benchmarks/results/*.json; do not edit by hand.",
        "Ratio > 1 means ours is better (faster, smaller or higher as the figure needs). Baselines:",
        "`benchmarks/reference.py` (plain PyTorch, torchvision MNIST with per-sample transforms) and",
        "`benchmarks/raw_loop.py` (our in-memory data path in a hand-written loop).",
        "Each section below is one machine; a machine without a section was not measured. "
        "Run `make benchmark` there to add one.",
        "Write-ups of one-off studies (benchmarks/studies/) follow the machines.",
        "",
    ]
    for results in all_results:
        machine, versions = results["machine"], results["versions"]
        lines += [
            f"## {title(machine)}{' (quick run: figures not comparable)' if results['quick'] else ''}",
            "",
            f"- machine: {machine.get('cpu')}, {machine.get('cpu_count')} cores, {machine.get('os')}, "
            f"accelerator: {machine.get('accelerator') or 'none'}",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
            f"- date: {results['date']}, commit {str(results.get('git_commit'))[:10]}"
            f"{' (dirty tree)' if results.get('git_dirty') else ''}, {results['repeats']} run(s) per figure",
        ]
        if results.get("partial"):
            earlier = results["earlier"]
            dates = ", ".join(f"{name} {date}" for name, date in sorted(results["partial"].items()))
            lines.append(
                f"- re-measured on their own: {dates} (the newest at the commit above); the other rows date "
                f"from {earlier['date']}, commit {str(earlier['git_commit'])[:10]}"
            )
        lines += ["", "| figure | ours | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
        for r in results["rows"]:
            met = {True: "yes", False: "**no**", None: ""}[r["met"]]
            ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
            cells = [r["figure"], fmt(r["ours"]), fmt(r["baseline"]), ratio, r["target"], met]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Method:", ""] + [f"- {r['figure']}: {r['method']}" for r in results["rows"] if r["method"]]
        lines.append("")
    for study in sorted(STUDIES.glob("*.md")):
        lines += [f"<!-- from {study.relative_to(ROOT)} -->", study.read_text().strip(), ""]
    return "\n".join(lines)


def fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
