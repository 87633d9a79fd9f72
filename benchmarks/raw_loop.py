"""Our data path driven by a hand-written loop: the framework-overhead reference. `python benchmarks/raw_loop.py`.

The same in-memory MNISTDataModule batches, normalisation, network, optimizer and OneCycle schedule as
the default `train` config, without Lightning's Trainer (no checkpoints, logging or metrics objects).
Prints one JSON line per epoch.
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
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--limit-batches", type=int, default=0, help="train batches per epoch (0: all)")
    parser.add_argument("--limit-val-batches", type=int, default=0, help="validation batches per epoch (0: all)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    datamodule = MNISTDataModule(args.data_dir, batch_size=args.batch_size, seed=args.seed, download=False)
    datamodule.setup("fit")
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    steps = args.limit_batches or len(train_loader)
    model = build_network(arch="cnn")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps * args.epochs)
    for epoch in range(args.epochs):
        train_loader.sampler.set_epoch(epoch)
        model.train()
        started, seen = time.perf_counter(), 0
        for step, (x, y) in enumerate(train_loader):
            if step >= steps:
                break
            optimizer.zero_grad()
            loss = F.cross_entropy(model(normalize(x)), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(y)
        train_s = time.perf_counter() - started
        model.eval()
        correct = total = 0
        with torch.inference_mode():
            for step, (x, y) in enumerate(val_loader):
                if args.limit_val_batches and step >= args.limit_val_batches:
                    break
                correct += (model(normalize(x)).argmax(1) == y).sum().item()
                total += len(y)
        epoch_s = time.perf_counter() - started
        print(
            json.dumps(
                {
                    "epoch": epoch + 1,
                    "train_samples_per_s": round(seen / train_s, 1),
                    "epoch_s": round(epoch_s, 3),
                    "val_acc": round(correct / total, 4),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
