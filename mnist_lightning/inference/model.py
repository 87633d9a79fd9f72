"""The one loaded-model handle that predict, serve, export, register and evaluate share: a checkpoint read once,
with its version id, network spec, run folder, metrics and export, and the classifier that runs it
(`runtime=torch`: the checkpoint in PyTorch; `runtime=onnx`: its export in ONNX Runtime, torch not imported)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from mnist_lightning.errors import UserError
from mnist_lightning.inference import preprocess
from mnist_lightning.runs import layout, lineage, model_json

RUNTIMES = ("torch", "onnx", "auto")  # auto: onnx when this checkpoint has an export and onnxruntime is here


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU; False without torch (the onnx container image has none), which is then not
    imported."""
    if find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


@dataclass
class LoadedModel:
    classifier: Any  # probabilities(digits) -> (N, 10): a TorchModel or an OnnxModel
    checkpoint: Path
    sha256: str
    net: dict  # {"arch": name, **arguments}, as training stored it
    run_dir: Path | None
    metrics: dict = field(default_factory=dict)  # the run's metrics.json
    export: dict | None = None  # model.json of this checkpoint's export, when there is one

    @property
    def version(self) -> str:
        """The id that names this model everywhere: metrics.json, exports, the registry, HTTP answers."""
        return self.sha256[:12]

    @property
    def runtime(self) -> str:
        return self.classifier.runtime

    @property
    def network(self):
        """The torch.nn.Module (runtime=torch only): evaluate and export run it directly."""
        if not hasattr(self.classifier, "network"):
            raise UserError("this command runs the checkpoint in PyTorch: give runtime=torch")
        return self.classifier.network

    @property
    def reference(self) -> dict | None:
        """The drift reference of its export (input and answer statistics), when the export has one."""
        return ((self.export or {}).get("reference") or {}).get("statistics")

    @classmethod
    def load(
        cls, checkpoint: str | Path, runtime: str = "torch", device: str = "cpu", export_dir: str | Path | None = None
    ) -> LoadedModel:
        """`runtime=auto` runs the checkpoint's export in ONNX Runtime when there is one (made from this very
        checkpoint), onnxruntime is installed and the model is to run on the CPU (`device=cpu`, or `device=auto`
        where torch sees no CUDA GPU); the checkpoint in PyTorch otherwise. `device=auto` is the GPU when torch
        sees one."""
        if runtime not in RUNTIMES:
            raise UserError(f"runtime={runtime}: use {' or '.join(RUNTIMES)}")
        checkpoint = Path(checkpoint).resolve()
        sha256 = lineage.sha256sum(checkpoint)
        folder = Path(export_dir) if export_dir else model_json.default_dir(checkpoint)
        try:
            export = model_json.read_meta(folder)
        except UserError:
            if runtime == "onnx":
                raise  # the export is the model here: say it is missing
            export = None
        if export is not None and export.get("checkpoint_sha256") != sha256:
            if runtime == "onnx":
                raise UserError(
                    f"{folder} holds the export of model {export.get('model_version')}, not of {checkpoint}: "
                    f"export that checkpoint (python -m mnist_lightning.export ckpt_path={checkpoint})"
                )
            export = None  # another checkpoint's export: neither its files nor its reference apply
        if runtime == "auto":
            exported = export is not None and "onnx" in export.get("files", {})
            on_cpu = device == "cpu" or (device == "auto" and not cuda_available())
            runtime = "onnx" if exported and on_cpu and find_spec("onnxruntime") is not None else "torch"
        if runtime == "torch":
            from mnist_lightning.inference.torch_runtime import TorchModel, pick_device

            device = str(pick_device(device))
            from mnist_lightning.models import checkpoint as checkpoints

            state = checkpoints.read(checkpoint, map_location=device)
            net = checkpoints.net_spec(state)
            classifier = TorchModel(checkpoints.network_from(state, checkpoint, map_location=device))
        else:
            from mnist_lightning.inference.onnx_runtime import OnnxModel

            net = {"arch": export["network"]["name"], **export["network"]["arguments"]}
            normalisation = export["input"]["normalisation"]
            classifier = OnnxModel(
                folder / export["files"]["onnx"]["file"], normalisation["mean"], normalisation["std"]
            )
        run_dir = layout.run_of_checkpoint(checkpoint)
        # a registered version's local copy (runs/registry.py) keeps its run's metrics.json beside the checkpoint
        metrics = layout.read_metrics(run_dir or checkpoint.parent) or {}
        return cls(classifier, checkpoint, sha256, net, run_dir, metrics, export)

    def classify(self, images: list) -> list[tuple[dict, object]]:
        """(result, prepared digit or None) per decoded PIL image, in one forward pass: `answer` of their digits."""
        return self.answer([preprocess.prepare(image) for image in images])

    def answer(self, prepared: list[preprocess.Prepared]) -> list[tuple[dict, object]]:
        """(result, digit or None) per prepared image (`preprocess.load_digit`), in one forward pass. A result
        holds prediction, confidence, probabilities and inversion, or prediction None and the reason when no digit
        was found. Safe to call from several threads at once (eval mode, no state)."""
        digits = [ready.digit for ready in prepared if ready.digit is not None]
        probabilities = iter(self.classifier.probabilities(digits) if digits else [])
        answers = []
        for ready in prepared:
            if ready.digit is None:
                empty = {"prediction": None, "confidence": None, "probabilities": None}
                answers.append(({**empty, "inverted": ready.inverted, "reason": ready.note}, None))
                continue
            probs = next(probabilities)
            digit = int(probs.argmax())
            result = {
                "prediction": digit,
                "confidence": round(float(probs[digit]), 6),
                "probabilities": [round(float(p), 6) for p in probs],
                "inverted": ready.inverted,
                "reason": None,
            }
            answers.append((result, ready.digit))
        return answers
