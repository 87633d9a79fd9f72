"""The model a service answers with: its classifier, version id, origin and drift reference, and one call that
turns decoded images into predictions, the same way `predict` does."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mnist_lightning.errors import UserError
from mnist_lightning.inference import artifacts, preprocess
from mnist_lightning.inference.classifiers import load_classifier
from mnist_lightning.models import checkpoint as checkpoints
from mnist_lightning.runs import layout, lineage


@dataclass
class ServedModel:
    classifier: object  # anything with probabilities(digits) -> (N, 10): a TorchModel or an OnnxModel
    version: str
    checkpoint: Path
    run_dir: Path | None
    net: dict
    metrics: dict = field(default_factory=dict)
    reference: dict | None = None  # the drift reference of its export's model.json, when there is one

    @property
    def runtime(self) -> str:
        return getattr(self.classifier, "runtime", "torch")

    @classmethod
    def load(
        cls, checkpoint: str | Path, device: str = "cpu", runtime: str = "torch", export_dir: str | Path | None = None
    ) -> ServedModel:
        """The model of a training checkpoint, run by `runtime` (torch, or onnx: its export in ONNX Runtime), with
        the run's metrics.json and the export's drift reference when they exist."""
        checkpoint = Path(checkpoint).resolve()
        net = dict(checkpoints.read(checkpoint)["hyper_parameters"]["net"])
        run_dir = layout.run_of_checkpoint(checkpoint)
        sha256 = lineage.sha256sum(checkpoint)
        folder = Path(export_dir) if export_dir else artifacts.default_dir(checkpoint)
        try:
            meta = artifacts.read_meta(folder)
        except UserError:
            meta = {}
        return cls(
            classifier=load_classifier(checkpoint, runtime, export_dir, device),
            version=sha256[:12],
            checkpoint=checkpoint,
            run_dir=run_dir,
            net=net,
            metrics=(layout.read_metrics(run_dir) or {}) if run_dir else {},
            reference=(meta.get("reference") or {}).get("statistics")
            if meta.get("checkpoint_sha256") == sha256
            else None,
        )

    def classify(self, images: list[Image.Image]) -> list[tuple[dict, object]]:
        """(result, prepared digit or None) per decoded image. A result holds prediction, confidence,
        probabilities and inversion, or prediction None and the reason when no digit was found. Safe to call from
        several threads at once (eval mode, no state)."""
        prepared = [preprocess.prepare(image) for image in images]
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
