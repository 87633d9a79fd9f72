"""Predict digits in real-world images: `python -m mnist_lightning.predict image=PATH`.

PATH is a file, a folder, a glob or a list. Each image is turned into MNIST's 28x28 format by
`mnist_lightning.inference.preprocess`; bad files get their own error line and never stop the batch.
Imports neither Lightning nor matplotlib (unless drawing), so it starts fast; with `runtime=onnx` the exported
model runs in ONNX Runtime and torch is not imported at all.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from mnist_lightning.cli.task import verb
from mnist_lightning.errors import UserError

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> list[dict]:
    from mnist_lightning.cli.build import check_numbers
    from mnist_lightning.inference import preprocess
    from mnist_lightning.inference.model import LoadedModel
    from mnist_lightning.runs import atomic, resolve

    if OmegaConf.is_missing(cfg, "image"):
        raise UserError(
            "image=PATH is required: a file, a folder of images, a glob such as 'digits/*.png', or a list [a.png,b.jpg]"
        )
    specs = list(cfg.image) if isinstance(cfg.image, ListConfig) else [cfg.image]
    paths, results = [], []
    for spec in specs:
        found, errors = preprocess.image_paths(str(spec))
        paths += found
        results += [{"path": s, "error": e} for s, e in errors]

    check_numbers(cfg, {"max_pixels": ("whole", 1, None)})
    if not paths:  # nothing to open: said before the model is loaded
        raise UserError("no image to predict: " + ("; ".join(r["error"] for r in results) or "image= names no file"))
    checkpoint = resolve.resolve_model(cfg.ckpt_path, cfg.model_ref, cfg.paths.outputs_root)
    model = LoadedModel.load(checkpoint, cfg.runtime, export_dir=cfg.export_dir)

    # one image at a time, decoded, reduced and prepared: only its 28x28 digit (and a preview when drawing) is kept
    limits = preprocess.DecodeLimits(max_pixels=cfg.max_pixels, max_bytes=cfg.max_pixels * 16)  # every format
    loaded = {}  # path -> (Prepared, preview image or None)
    for path in paths:
        try:
            image = preprocess.open_image(path, limits=limits)
            ready = preprocess.prepare(image)
        except preprocess.ImageError as exc:
            message = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
            results.append({"path": str(path), "error": message})
            continue
        if cfg.visualize:
            image.thumbnail((512, 512))
        loaded[path] = (ready, image if cfg.visualize else None)
    prepared = {}  # path -> (preview, its 28x28 digit), for the figures
    answers = model.answer([ready for ready, _ in loaded.values()])
    for (path, (_, preview)), (answer, digit) in zip(loaded.items(), answers, strict=True):
        if answer["prediction"] is None:
            results.append({"path": str(path), "error": answer["reason"]})
            continue
        prepared[path] = (preview, digit)
        results.append({"path": str(path), **{k: v for k, v in answer.items() if k != "reason"}})

    order = {str(p): i for i, p in enumerate(paths)}
    results.sort(key=lambda r: order.get(r["path"], -1))  # the order the user gave, errors for patterns first
    run_dir = Path(cfg.paths.output_dir)
    out_file = Path(cfg.predictions_file) if cfg.predictions_file else run_dir / "predictions.jsonl"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_file, "".join(json.dumps(r) + "\n" for r in results))

    if cfg.visualize and prepared:
        from mnist_lightning.artifacts import reports

        for index, result in enumerate(results):
            if "prediction" not in result:
                continue
            image, digit = prepared[Path(result["path"])]
            title = f"{result['prediction']} ({result['confidence']:.1%})"
            figure = reports.prediction_figure(image, digit, result["probabilities"], title)
            reports.save_figure(figure, run_dir / f"{index:03d}_{Path(result['path']).stem}.png")

    print(_table(results, len(paths), checkpoint, out_file))
    return results


def _table(results: list[dict], images: int, checkpoint: Path, out_file: Path) -> str:
    lines = [f"model: {checkpoint}", ""]
    width = max([len(r["path"]) for r in results] + [4])
    lines.append(f"{'image':<{width}}  digit  confidence  " + " ".join(f"{d:>5}" for d in range(10)))
    for r in results:
        if "prediction" in r:
            probs = " ".join(f"{p:5.3f}" for p in r["probabilities"])
            lines.append(f"{r['path']:<{width}}  {r['prediction']:>5}  {r['confidence']:>10.2%}  {probs}")
        else:
            lines.append(f"{r['path']:<{width}}  error: {r['error']}")
    done = sum("prediction" in r for r in results)
    others = len(results) - images  # files skipped in a folder, names and patterns that found nothing
    also = f" ({others} other input{'s' if others != 1 else ''} skipped or not found)" if others else ""
    lines += ["", f"{done} of {images} images predicted{also}; written to {out_file}"]
    return "\n".join(lines)


@verb("predict")
def main(cfg: DictConfig) -> None:
    results = predict(cfg)
    if not any("prediction" in r for r in results):  # the table says why for each; a user's input: exit status 2
        log.error(
            "No image could be predicted: %s", results[0]["error"] + (" (and more above)" if len(results) > 1 else "")
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
