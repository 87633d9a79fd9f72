"""Using a trained network: evaluating the test set, single-image and batched inference with preprocessing, the
three runtimes side by side, and the cold start of `predict`."""

from __future__ import annotations

import io
from pathlib import Path

from benchmarks.harness import ROOT, Bench, log, median, percentile, timed
from benchmarks.report import row


def evaluation(bench: Bench) -> list[dict]:
    """10,000 test images: torchvision dataset + per-sample transforms vs our evaluate pipeline's inference."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    from mnist_lightning.data.datamodule import MNISTDataModule
    from mnist_lightning.inference.torch_runtime import logits_in_batches
    from mnist_lightning.models.cnn import SeedCNN

    network = SeedCNN().eval()
    count = 1000 if bench.quick else 10_000

    def baseline() -> float:
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
        test = datasets.MNIST(str(bench.data_dir), train=False, download=False, transform=transform)
        loader = DataLoader(Subset(test, range(count)), batch_size=1000, num_workers=0)
        correct = 0
        with torch.no_grad():
            for x, y in loader:
                correct += (network(x).argmax(1) == y).sum().item()
        return correct

    def ours() -> float:
        datamodule = MNISTDataModule(str(bench.data_dir), download=False)
        datamodule.setup("test")
        images, labels = datamodule.test_set.images[:count], datamodule.test_set.labels[:count]
        logits = logits_in_batches(network, images, datamodule.eval_batch_size_for("cpu"), torch.device("cpu"))
        return int((logits.argmax(1) == labels).sum())

    times = {"ours": [], "baseline": []}
    for _ in range(1 if bench.quick else max(bench.repeats, 3)):
        for name, fn in (("baseline", baseline), ("ours", ours)):
            times[name].append(round(timed(fn), 3))
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
            f"{MNISTDataModule(str(bench.data_dir)).eval_batch_size_for('cpu')}",
            runs=times,
        )
    ]


def inference(bench: Bench) -> list[dict]:
    """Single-image latency with preprocessing, batched throughput, and the CLI's cold start."""
    import torch

    from mnist_lightning.inference import preprocess
    from mnist_lightning.inference.torch_runtime import logits_in_batches, probabilities
    from mnist_lightning.models.checkpoint import load_network

    checkpoint = bench.inference_checkpoint()
    network = load_network(checkpoint)
    images = sorted(p for p in (ROOT / "examples").iterdir() if p.suffix in (".png", ".jpg", ".gif"))
    decoded = [preprocess.open_image(p) for p in images]

    def one(index: int) -> None:
        image = preprocess.open_image(images[index % len(images)])
        probabilities(network, [preprocess.prepare(image).digit])

    for i in range(20):
        one(i)
    n = 100 if bench.quick else 2000
    latencies = [timed(one, i) * 1000 for i in range(n)]
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)

    batch = [decoded[i % len(decoded)] for i in range(256)]

    def prepare_and_predict() -> None:
        probabilities(network, [preprocess.prepare(image).digit for image in batch])

    rates = [len(batch) / timed(prepare_and_predict) for _ in range(3 if bench.quick else 10)]
    tensors = torch.randint(0, 256, (1000 if bench.quick else 10_000, 28, 28), dtype=torch.uint8)
    model_rate = len(tensors) / timed(logits_in_batches, network, tensors, 64, torch.device("cpu"))
    cold = [cold_start(bench, f"predict_cold_{i}", images[0], checkpoint) for i in range(bench.repeats)]
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


def runtimes(bench: Bench) -> list[dict]:
    """One model in PyTorch eager, as its .pt2 and in ONNX Runtime, side by side in one process: single-image
    latency (forward only, and end to end from a 28x28 PNG's bytes), batches of 256, and predict's cold start."""
    import torch
    from PIL import Image

    from mnist_lightning.data.files import load_split
    from mnist_lightning.inference import preprocess
    from mnist_lightning.inference.model import LoadedModel
    from mnist_lightning.inference.onnx_runtime import OnnxModel
    from mnist_lightning.inference.torch_runtime import TorchModel
    from mnist_lightning.runs import model_json

    checkpoint = bench.exported_checkpoint()  # the serving figures use the same export
    folder = model_json.default_dir(checkpoint)
    images, _ = load_split(bench.data_dir, train=False)
    model = LoadedModel.load(checkpoint)
    models = {
        "PyTorch eager": model.classifier,
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

    def from_png(model) -> None:
        model.probabilities([preprocess.prepare(preprocess.decode_image(one, "digit.png")).digit])

    n = 100 if bench.quick else 2000
    forward, end_to_end, rates = ({name: [] for name in models} for _ in range(3))
    for model in models.values():
        for _ in range(20):
            model.probabilities([digit])
    for _ in range(bench.repeats):  # the runtimes take turns, so that each sees the same machine
        for name, model in models.items():
            for _ in range(n // bench.repeats):
                forward[name].append(timed(model.probabilities, [digit]) * 1000)
                end_to_end[name].append(timed(from_png, model) * 1000)
            for _ in range(3 if bench.quick else 10):
                rates[name].append(len(batch) / timed(model.probabilities, batch))

    pct = lambda values, q: round(percentile(values, q), 3)  # noqa: E731
    rows = []
    base = "PyTorch eager"
    figures = (
        ("single 28x28 digit, forward only, p50 (ms)", forward, 0.5, "lower"),
        ("single 28x28 digit, forward only, p99 (ms)", forward, 0.99, "lower"),
        ("single 28x28 PNG, bytes to probabilities, p50 (ms)", end_to_end, 0.5, "lower"),
        ("single 28x28 PNG, bytes to probabilities, p99 (ms)", end_to_end, 0.99, "lower"),
    )
    how = (
        f"{n} calls per runtime in {bench.repeats} alternating rounds, one process, after 20 warm-up calls; "
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

    image_path = bench.scratch / "digit.png"
    image_path.write_bytes(one)
    cold = {"torch": [], "onnx": []}
    for i in range(bench.repeats):
        for runtime in cold:
            overrides = (f"runtime={runtime}", f"export_dir={folder}")
            cold[runtime].append(cold_start(bench, f"predict_{runtime}_{i}", image_path, checkpoint, *overrides))
    log(f"   runtimes: e2e p50 {[pct(end_to_end[m], 0.5) for m in models]} ms, cold start {cold}")
    rows.append(
        row(
            "runtimes",
            "cold start: predict runtime=onnx vs runtime=torch, one image (s)",
            median(cold["onnx"]),
            median(cold["torch"]),
            "s",
            method=f"process start to exit, median of {bench.repeats}, alternating; runtime=onnx imports no torch",
            runs=cold,
        )
    )
    return rows


def cold_start(bench: Bench, name: str, image: Path, checkpoint: Path, *overrides: str) -> float:
    """Seconds of `python -m mnist_lightning.predict visualize=false` on one image, process start to exit."""
    args = ["-m", "mnist_lightning.predict", f"image={image}", f"ckpt_path={checkpoint}", *overrides]
    return round(bench.child(name, [*args, "visualize=false", f"hydra.run.dir={bench.scratch / name}"])["wall_s"], 3)
