"""The export folder: a trained network as files that run without this package's training code.

- `model.onnx`: one self-contained ONNX file for ONNX Runtime (any language, a browser, a phone);
- `model.pt2`: a `torch.export` ExportedProgram, torch's current format for a model without its Python class;
- `model.json`: everything needed to use them elsewhere: version, origin, input and output names and shapes,
  the normalisation, the test accuracy, and the parity the export was verified to.

Writing needs the `export` extra (onnx, onnxscript, onnxruntime). What model.json holds and how it is read is
`mnist_lightning.runs.model_json`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

from mnist_lightning.errors import UserError, require_extra
from mnist_lightning.runs import atomic, lineage
from mnist_lightning.runs.model_json import FORMAT, INPUT, META_FILE, ONNX_FILE, OUTPUT, PT2_FILE

log = logging.getLogger(__name__)

TOLERANCE = 1e-4  # the largest |logit difference| to PyTorch an export may show on the test set


class ExportMismatch(UserError):
    """An exported model does not give PyTorch's answers; nothing was written."""


def require_export_extra() -> None:
    require_extra("export", "onnx", "onnxscript", "onnxruntime", needed_for="exporting")


def export(model, out_dir: Path, test_images, test_labels, train_images=None, val_images=None) -> dict:
    """Write model.onnx, model.pt2 and model.json for `model` (a LoadedModel in PyTorch) into `out_dir`, after
    checking on the test images that both give PyTorch's predictions. Raises ExportMismatch and writes nothing
    otherwise.

    With training and validation images, model.json also gets the reference statistics a service watches for
    drift: the inputs' (from a sample of training digits) and the model's answers (on the validation split).
    """
    import torch

    require_export_extra()
    network = model.network.cpu().eval()  # the exporters trace the module as it is: dropout must be off
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as scratch:  # removed whatever happens
        scratch = Path(scratch)
        batch = torch.export.Dim("batch", min=1, max=1 << 20)
        example = (torch.zeros(2, 1, 28, 28),)  # a batch of 1 would fix the batch dimension to 1
        opset = _export_onnx(network, example, batch, scratch / ONNX_FILE)
        program = torch.export.export(network, example, dynamic_shapes=({0: batch},))
        torch.export.save(program, scratch / PT2_FILE)
        verification = verify(network, scratch, test_images, test_labels)
        meta = describe(model, opset, verification, scratch)
        if train_images is not None and val_images is not None:
            meta["reference"] = reference_statistics(network, train_images, val_images)
        atomic.write_text(scratch / META_FILE, json.dumps(meta, indent=2) + "\n")
        for name in (ONNX_FILE, PT2_FILE, META_FILE):  # model.json last: it vouches for the two files
            shutil.move(scratch / name, out_dir / name)
    return meta


def export_with(datamodule, model, out_dir: Path) -> dict:
    """export() on a datamodule set up for "fit": its test split to verify on, its training and validation
    splits for the drift reference."""
    return export(
        model,
        out_dir,
        datamodule.test_set.images,
        datamodule.test_set.labels,
        datamodule.train_set.images,
        datamodule.val_set.images,
    )


def exported_for_registry(model, build_datamodule) -> Path | None:
    """The export folder of `model` (a LoadedModel) to file with its registry version, made now unless it holds
    this checkpoint's export with the drift reference (`build_datamodule()`: a datamodule set up for "fit"); None
    without the export extra (the weights are registered alone, and said so)."""
    from mnist_lightning.errors import UserError
    from mnist_lightning.runs import model_json

    try:
        require_export_extra()
    except UserError as exc:
        log.warning("Registering the weights only: %s", exc)
        return None
    folder = model_json.default_dir(model.checkpoint)
    if model.export is not None and "reference" in model.export:  # LoadedModel keeps only this checkpoint's export
        return folder
    # none yet, one of another checkpoint, or one made before model.json held the drift reference: made again
    log.info("Exporting %s into %s first", model.checkpoint, folder)
    export_with(build_datamodule(), model, folder)
    return folder


def _export_onnx(network, example, batch, path: Path) -> int:
    import contextlib
    import io
    import logging

    import onnx
    import torch

    for name in ("onnx_ir", "onnxscript"):  # their passes log every step at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        torch.onnx.export(
            network,
            example,
            str(path),
            dynamo=True,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=({0: batch},),
            external_data=False,
            optimize=True,
            verbose=False,
        )
    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):  # name the batch axis for every reader
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))


def verify(network, folder: Path, images, labels, batch_size: int = 64) -> dict:
    """Every test image through PyTorch, ONNX Runtime (CPU) and the loaded .pt2: identical predictions and
    logits within TOLERANCE, or ExportMismatch naming what differs."""
    import numpy as np
    import torch

    from mnist_lightning.data.transforms import normalize
    from mnist_lightning.inference.onnx_runtime import OnnxModel

    onnx_model = OnnxModel(folder / ONNX_FILE)
    pt2 = torch.export.load(folder / PT2_FILE).module()
    outputs = {"torch": [], "onnxruntime": [], "pt2": []}
    with torch.inference_mode():
        for chunk in images.split(batch_size):
            x = normalize(chunk)
            outputs["torch"].append(network(x).numpy())
            outputs["pt2"].append(pt2(x).numpy())
            outputs["onnxruntime"].append(onnx_model.logits(x.numpy()))
    logits = {name: np.concatenate(parts) for name, parts in outputs.items()}
    reference = logits["torch"].argmax(1)
    figures = {
        "images": len(labels),
        "tolerance": TOLERANCE,
        "max_abs_logit_diff": {k: float(np.abs(v - logits["torch"]).max()) for k, v in logits.items() if k != "torch"},
        "differing_predictions": {k: int((v.argmax(1) != reference).sum()) for k, v in logits.items() if k != "torch"},
        "accuracy": {k: float((v.argmax(1) == labels.numpy()).mean()) for k, v in logits.items()},
    }
    bad = [
        f"{k}: {figures['differing_predictions'][k]} predictions differ, max |logit difference| "
        f"{figures['max_abs_logit_diff'][k]:.2e}"
        for k in figures["max_abs_logit_diff"]
        if figures["differing_predictions"][k] or figures["max_abs_logit_diff"][k] >= TOLERANCE
    ]
    if bad:
        raise ExportMismatch(
            f"the export does not match PyTorch on the {len(labels):,} test images "
            f"({'; '.join(bad)}; tolerance {TOLERANCE}); nothing was written"
        )
    return figures


REFERENCE_SAMPLE = 5000  # training digits for the input reference, validation digits for the answers


def reference_statistics(network, train_images, val_images) -> dict:
    """Input statistics of training digits and the model's answers on validation digits, each prepared as a
    served image is (the same crop, scale and centring), so that a service compares like with like."""
    import torch
    from PIL import Image

    from mnist_lightning.inference import preprocess, statistics, torch_runtime

    def prepared(images) -> list:
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:REFERENCE_SAMPLE]
        digits = [preprocess.prepare(Image.fromarray(images[i].numpy())).digit for i in pick.tolist()]
        return [d for d in digits if d is not None]

    answered = prepared(val_images)
    probs = torch.cat(
        [torch_runtime.probabilities(network, answered[i : i + 256]) for i in range(0, len(answered), 256)]
    )
    probs = probs.float().numpy()
    result = statistics.reference(prepared(train_images), probs.argmax(1), probs.max(1))
    return {
        "statistics": result,
        "inputs": f"{min(len(train_images), REFERENCE_SAMPLE):,} training digits (random, seed 0), prepared as served",
        "outputs": f"{len(answered):,} validation digits (random, seed 0), prepared as served",
        "bins": statistics.BINS,
    }


def describe(model, opset: int, verification: dict, folder: Path) -> dict:
    from mnist_lightning.data.transforms import MNIST_MEAN, MNIST_STD

    net = dict(model.net)
    versions = {}
    for package in ("torch", "onnx", "onnxscript", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "format": FORMAT,
        "model_version": model.version,
        "checkpoint": str(model.checkpoint),
        "checkpoint_sha256": model.sha256,
        "run_dir": str(model.run_dir) if model.run_dir else None,
        "network": {"name": net.pop("arch"), "arguments": net},
        "input": {
            "name": INPUT,
            "shape": ["batch", 1, 28, 28],
            "dtype": "float32",
            "normalisation": {"mean": MNIST_MEAN, "std": MNIST_STD, "formula": "(pixel / 255 - mean) / std"},
            "layout": "one digit, light on dark, 28x28, its longer side 20 px, centre of mass at pixel (14, 14)",
        },
        "output": {
            "name": OUTPUT,
            "shape": ["batch", 10],
            "classes": [str(d) for d in range(10)],
            "meaning": "unnormalised log-probabilities: softmax gives the probability of each digit",
        },
        "files": {
            "onnx": {"file": ONNX_FILE, "opset": opset, "sha256": lineage.sha256sum(folder / ONNX_FILE)},
            "pt2": {"file": PT2_FILE, "sha256": lineage.sha256sum(folder / PT2_FILE)},
        },
        # the training run's own test figure, and on how many test images (fewer than 10,000: a partial run, e.g.
        # trainer.limit_test_batches); verification.accuracy below is on every test image
        "test_accuracy": model.metrics.get("test/acc"),
        "test_images": model.metrics.get("test_samples"),
        "verification": verification,
        "exported_with": versions,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
