"""The model a service answers with: the network, its version id and where it came from, and one call that turns
decoded images into predictions, the same way `predict` does."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from mnist_lightning.inference import preprocess, runtime
from mnist_lightning.models import checkpoint as checkpoints
from mnist_lightning.runs import layout, lineage


@dataclass
class ServedModel:
    network: torch.nn.Module
    version: str
    checkpoint: Path
    run_dir: Path | None
    net: dict
    metrics: dict = field(default_factory=dict)

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "cpu") -> ServedModel:
        """The network of a training checkpoint in eval mode, with the run's metrics.json when it has one."""
        checkpoint = Path(checkpoint).resolve()
        net = dict(checkpoints.read(checkpoint)["hyper_parameters"]["net"])
        in_run = checkpoint.parent.name == layout.CHECKPOINT_DIR
        run_dir = checkpoint.parent.parent if in_run else None
        return cls(
            network=checkpoints.load_network(checkpoint, map_location=device),
            version=lineage.model_version(checkpoint),
            checkpoint=checkpoint,
            run_dir=run_dir,
            net=net,
            metrics=(layout.read_metrics(run_dir) or {}) if run_dir else {},
        )

    def classify(self, images: list[Image.Image]) -> list[dict]:
        """One result per decoded image: prediction, confidence, probabilities and inversion, or prediction None
        and the reason when no digit was found. Safe to call from several threads at once (eval mode, no state)."""
        prepared = [preprocess.prepare(image) for image in images]
        digits = [ready.digit for ready in prepared if ready.digit is not None]
        probabilities = iter(runtime.probabilities(self.network, digits) if digits else [])
        results = []
        for ready in prepared:
            if ready.digit is None:
                results.append(
                    {
                        "prediction": None,
                        "confidence": None,
                        "probabilities": None,
                        "inverted": ready.inverted,
                        "reason": ready.note,
                    }
                )
                continue
            probs = next(probabilities)
            confidence, digit = probs.max(0)
            results.append(
                {
                    "prediction": int(digit),
                    "confidence": round(float(confidence), 6),
                    "probabilities": [round(float(p), 6) for p in probs],
                    "inverted": ready.inverted,
                    "reason": None,
                }
            )
        return results
