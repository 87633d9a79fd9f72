"""An exported model in ONNX Runtime: NumPy in, NumPy out, no torch imported (so `predict runtime=onnx` starts
without loading torch). The inputs are the prepared digits of `preprocess`, normalised as model.json says."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_lightning.errors import UserError, require_extra
from mnist_lightning.runs.model_json import INPUT, OUTPUT


class OnnxModel:
    """A model.onnx in an ONNX Runtime session on the CPU."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, mean: float = 0.1307, std: float = 0.3081) -> None:
        require_extra("export", "onnxruntime", needed_for="runtime=onnx")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: the session's own warnings are not the user's business
        # ONNX Runtime's threads spin between calls by default: a service's calls come apart, and spinning only
        # took CPU time from the requests in flight (serve with 8 clients: 254 against 230 requests/s)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # missing, truncated, not ONNX, an unknown operator...
            reason = " ".join(str(exc).split())[:300]
            raise UserError(
                f"{path}: not a loadable ONNX model ({exc.__class__.__name__}: {reason}); export the "
                f"model again with python -m mnist_lightning.export"
            ) from exc
        self.path, self.mean, self.std = Path(path), mean, std

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, 10) for normalised float32 images (N, 1, 28, 28)."""
        return self.session.run([OUTPUT], {INPUT: np.asarray(batch, dtype=np.float32)})[0]

    def probabilities(self, digits: list[np.ndarray]) -> np.ndarray:
        """Class probabilities (N, 10) for prepared 28x28 digits (values in 0..1)."""
        batch = ((np.stack(digits)[:, None] - self.mean) / self.std).astype(np.float32)
        logits = self.logits(batch)
        exp = np.exp(logits - logits.max(1, keepdims=True))
        return exp / exp.sum(1, keepdims=True)
