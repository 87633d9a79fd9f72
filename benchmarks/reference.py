"""The baseline: what a user writes without a framework. `python benchmarks/reference.py --epochs 5`.

Same network (the seed CNN), torchvision's MNIST with ToTensor + Normalize per sample, a DataLoader
(batch 64, shuffle, no workers), Adam at 1e-3, and an evaluation after each epoch. Prints one JSON
line per epoch (train and validation samples/s, test accuracy, elapsed training time, the clock time when the
epoch's test ended) and the peak RSS. `--until-acc 0.99` stops after the first epoch whose test accuracy reaches it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from mnist_lightning.models.cnn import SeedCNN


def evaluate(model, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR", "data"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit-batches", type=int, default=0, help="stop each epoch after N batches (0: all)")
    parser.add_argument("--eval-limit", type=int, default=0, help="evaluate on the first N val/test images (0: all)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--until-acc", type=float, default=None, help="stop once the test accuracy reaches this")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    full = datasets.MNIST(args.data_dir, train=True, download=True, transform=transform)
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(12345)).tolist()
    train, val = Subset(full, order[:55_000]), Subset(full, order[55_000:])
    test = datasets.MNIST(args.data_dir, train=False, download=True, transform=transform)
    if args.eval_limit:  # smoke runs only: the figures then describe part of the sets
        val, test = Subset(val, range(args.eval_limit)), Subset(test, range(args.eval_limit))
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=0)
    val_loader = DataLoader(val, batch_size=1000, num_workers=0)
    test_loader = DataLoader(test, batch_size=1000, num_workers=0)

    model = SeedCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    training_time, first_step_at = 0.0, None
    for epoch in range(1, args.epochs + 1):
        model.train()
        started, seen = time.perf_counter(), 0
        for step, (x, y) in enumerate(train_loader):
            if args.limit_batches and step >= args.limit_batches:
                break
            first_step_at = first_step_at or time.time()
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            seen += len(y)
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        val_acc = evaluate(model, val_loader)
        val_s = time.perf_counter() - started
        training_time += train_s + val_s
        test_acc = evaluate(model, test_loader)
        print(
            json.dumps(
                {
                    "epoch": epoch,
                    "train_samples_per_s": round(seen / train_s, 1),
                    "val_samples_per_s": round(len(val) / val_s, 1),
                    "epoch_s": round(train_s + val_s, 2),
                    "val_acc": round(val_acc, 4),
                    "test_acc": round(test_acc, 4),
                    "training_time_s": round(training_time, 2),
                    # clock times: the benchmark subtracts its launch time for whole-process figures
                    "unix_time": round(time.time(), 3),
                    "first_step_unix_time": round(first_step_at, 3),
                }
            ),
            flush=True,
        )
        if args.until_acc is not None and test_acc >= args.until_acc:
            break
    print(json.dumps({"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
