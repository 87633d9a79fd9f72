"""Export a trained model: `python -m mnist_lightning.export` (`make export`, `mnist-export`).

Writes model.onnx (ONNX Runtime, any language), model.pt2 (torch.export) and model.json (how to use them) into
the run's `export/` folder, after checking that both give PyTorch's predictions on all 10,000 test images.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from mnist_lightning.cli.task import verb
from mnist_lightning.errors import UserError

log = logging.getLogger(__name__)


def export(cfg: DictConfig) -> dict:
    from mnist_lightning.artifacts import export as exporting
    from mnist_lightning.cli.build import build_data
    from mnist_lightning.inference.model import LoadedModel
    from mnist_lightning.runs import model_json
    from mnist_lightning.runs.resolve import resolve_model

    exporting.require_export_extra()
    checkpoint = resolve_model(cfg.ckpt_path, cfg.model_ref, cfg.paths.outputs_root)
    out_dir = Path(cfg.output_dir) if cfg.output_dir else model_json.default_dir(checkpoint)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output_dir={out_dir}: a file, not a folder; give a folder to write the export into")
    model = LoadedModel.load(checkpoint)
    datamodule = build_data(cfg.data, "fit")  # the test split to verify on, training and validation for drift
    log.info("Exporting %s into %s", checkpoint, out_dir)
    meta = exporting.export_with(datamodule, model, out_dir)
    check = meta["verification"]
    log.info(
        "\nSummary\n  model version   %s\n  written to      %s\n  files           %s, %s, %s (ONNX opset %d)\n"
        "  verified on     %s test images: same predictions, max |logit difference| %s (tolerance %g)",
        meta["model_version"],
        out_dir,
        model_json.ONNX_FILE,
        model_json.PT2_FILE,
        model_json.META_FILE,
        meta["files"]["onnx"]["opset"],
        f"{check['images']:,}",
        ", ".join(f"{k} {v:.1e}" for k, v in check["max_abs_logit_diff"].items()),
        check["tolerance"],
    )
    return meta


@verb("export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
