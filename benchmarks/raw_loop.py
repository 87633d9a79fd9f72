"""Our data path driven by a hand-written loop: the framework-overhead reference. `python benchmarks/raw_loop.py`.

The same in-memory MNISTDataModule batches, normalisation, network, optimizer and OneCycle schedule as
the default `train` config, without Lightning's Trainer (no checkpoints, logging or metrics objects).
Prints one JSON line per epoch; `--test` adds the test accuracy after the last one. `--arch`, `--batch-size`,
`--lr`, `--label-smoothing` and `--epochs` try other recipes (the time-to-99% study in BENCHMARKS.md):

    python benchmarks/raw_loop.py --arch bn_cnn --batch-size 128 --lr 1e-2 --label-smoothing 0.1 --epochs 2 --test

`--variants` instead times the training steps alone, on the CPU, in every memory format and precision this
machine runs natively (fp32, contiguous and channels_last; bf16 autocast too where the CPU has AMX/AVX512-BF16),
each from the same seed on the same batches already in memory, and prints one JSON line per variant and then
the fastest: the ceiling `make benchmark` holds the Trainer's throughput against.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from mnist_lightning.data.datamodule import MNISTDataModule
from mnist_lightning.data.transforms import normalize
from mnist_lightning.models import build_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR", "data"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3, help="the OneCycle peak")
    parser.add_argument("--arch", default="cnn", help="a network of mnist_lightning.models, default arguments")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--memory-format", choices=("channels_last", "contiguous"), default="channels_last")
    parser.add_argument("--test", action="store_true", help="print the test accuracy after the last epoch")
    parser.add_argument("--limit-batches", type=int, default=0, help="train batches per epoch (0: all)")
    parser.add_argument("--limit-val-batches", type=int, default=0, help="validation batches per epoch (0: all)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--variants", action="store_true", help="time every native format and precision instead")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per variant (after 20 warm-up steps)")
    args = parser.parse_args()
    if args.variants:
        variants(args)
        return

    torch.manual_seed(args.seed)
    datamodule = MNISTDataModule(args.data_dir, batch_size=args.batch_size, seed=args.seed, download=False)
    datamodule.setup("fit")
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    steps = args.limit_batches or len(train_loader)
    memory_format = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format
    model = build_network(arch=args.arch).to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    # the scheduler config's warm-up share (pct_start 0.25), as the train config has it
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=steps * args.epochs, pct_start=0.25
    )
    prepare = lambda x: normalize(x).contiguous(memory_format=memory_format)  # noqa: E731
    started_all, training_s = time.perf_counter(), 0.0
    for epoch in range(args.epochs):
        train_loader.sampler.set_epoch(epoch)
        model.train()
        started, seen = time.perf_counter(), 0
        for step, (x, y) in enumerate(train_loader):
            if step >= steps:
                break
            optimizer.zero_grad()
            loss = F.cross_entropy(model(prepare(x)), y, label_smoothing=args.label_smoothing)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(y)
        train_s = time.perf_counter() - started
        training_s += train_s
        val_acc = accuracy(model, val_loader, prepare, args.limit_val_batches)
        epoch_s = time.perf_counter() - started
        print(
            json.dumps(
                {
                    "epoch": epoch + 1,
                    "train_samples_per_s": round(seen / train_s, 1),
                    "epoch_s": round(epoch_s, 3),
                    "val_acc": round(val_acc, 4),
                }
            ),
            flush=True,
        )
    if args.test:
        datamodule.setup("test")
        test_acc = accuracy(model, datamodule.test_dataloader(), prepare)
        recipe = {k: v for k, v in vars(args).items() if k not in ("data_dir", "variants", "steps", "test")}
        result = {
            "test_acc": round(test_acc, 4),
            "training_s": round(training_s, 2),  # training steps only
            "seconds": round(time.perf_counter() - started_all, 2),  # data loading excluded, validation included
            "recipe": recipe,
        }
        print(json.dumps(result), flush=True)


def accuracy(model, loader, prepare, limit_batches: int = 0) -> float:
    """Share of right answers over the loader's batches (the first `limit_batches` of them when > 0)."""
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for step, (x, y) in enumerate(loader):
            if limit_batches and step >= limit_batches:
                break
            correct += (model(prepare(x)).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def native_variants() -> list[tuple[str, bool]]:
    """(memory format, bf16 autocast) pairs worth timing on this machine."""
    from mnist_lightning.training.precision import auto_precision

    bf16 = auto_precision("auto")[0] == "bf16-mixed"
    return [(fmt, amp) for amp in ((False, True) if bf16 else (False,)) for fmt in ("contiguous", "channels_last")]


def variants(args) -> None:
    datamodule = MNISTDataModule(args.data_dir, batch_size=args.batch_size, seed=args.seed, download=False)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(0)
    warmup = 20
    batches = []
    for x, y in loader:  # the same batches for every variant, already in memory
        batches.append((x, y))
        if len(batches) == warmup + args.steps:
            break
    warmup = min(warmup, len(batches) // 2)
    best = None
    for fmt, amp in native_variants():
        torch.manual_seed(args.seed)
        memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        model = build_network(arch=args.arch).to(memory_format=memory_format).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        seen = 0
        for step, (x, y) in enumerate(batches):
            if step == warmup:
                started, seen = time.perf_counter(), 0
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(normalize(x).contiguous(memory_format=memory_format)), y)
            loss.backward()
            optimizer.step()
            seen += len(y)
        rate = seen / (time.perf_counter() - started)
        result = {"variant": f"{'bf16 autocast' if amp else 'fp32'}, {fmt}", "train_samples_per_s": round(rate, 1)}
        print(json.dumps(result), flush=True)
        if best is None or rate > best["train_samples_per_s"]:
            best = result
    print(json.dumps({"best": best}), flush=True)


if __name__ == "__main__":
    main()
