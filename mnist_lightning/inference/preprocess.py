"""Any image of a digit -> the 28x28 input the model was trained on, the way MNIST itself was made.

Imports neither Lightning nor Hydra, so the predict CLI, a server and notebooks share it and start fast.
MNIST's recipe: light digit on a dark background, the digit's bounding box scaled so its longer side
is 20 px (aspect ratio kept, anti-aliased), placed in a 28x28 field with its centre of mass in the middle.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_lightning.errors import UserError

MAX_PIXELS = 40_000_000  # larger images are refused (decompression bombs, accidental photos of posters)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}
INK_THRESHOLD = 0.15  # share of full contrast above which a pixel counts as part of the digit
MIN_CONTRAST = 0.2  # an image whose darkest and lightest parts differ by less holds no digit


class ImageError(UserError):
    """This file cannot be turned into a model input; the message says why."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed (a decompression bomb, a photo of a poster)."""


@dataclass
class Prepared:
    """`digit` is (28, 28) float32 in [0, 1], light on dark like MNIST; None when no digit was found."""

    digit: np.ndarray | None
    inverted: bool
    note: str = ""


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file, with EXIF orientation applied. Raises ImageError."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    return decode_image(path, str(path), max_pixels)


def decode_image(source: str | Path | bytes | BinaryIO, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Fully decode an image (a path, its bytes, or a file object), with EXIF orientation applied.

    Raises ImageError naming `name` for an empty, unknown, truncated or corrupt image, or one over `max_pixels`
    (checked from the header, before the pixels are decoded).
    """
    if isinstance(source, bytes):
        if not source:
            raise ImageError(f"{name}: empty file")
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below is stricter
            image = Image.open(source)
        with image:
            if image.width * image.height > max_pixels:
                raise ImageTooLarge(
                    f"{name}: {image.width}x{image.height} pixels is over the limit of {max_pixels:,}; "
                    f"scale it down first"
                )
            image.load()
            return ImageOps.exif_transpose(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name}: refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:  # its message names a BytesIO object, of no use to the reader
        raise ImageError(f"{name}: not a readable image (not in a format Pillow reads)") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors for unknown, truncated or corrupt files
        raise ImageError(f"{name}: not a readable image ({exc})") from exc


def to_gray(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> 2-D float32 in [0, 1]; transparency is composited onto a contrasting background."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        return np.clip(array / top, 0, 1)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA", "RGBa") or (image.mode == "L" and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        rgba = np.asarray(image, dtype=np.float32) / 255
        alpha = rgba[..., 3]
        gray = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if alpha.min() < 1:
            # drawn strokes on a transparent sheet: put them on the background that makes them visible
            ink = float((gray * alpha).sum() / max(alpha.sum(), 1e-6))
            background = 1.0 if ink < 0.5 else 0.0
            gray = gray * alpha + background * (1 - alpha)
        return gray
    return np.asarray(image.convert("L"), dtype=np.float32) / 255


def prepare(image: Image.Image, steps: list[tuple[str, np.ndarray]] | None = None) -> Prepared:
    """The MNIST recipe on one decoded image. With a `steps` list, each stage's picture is appended to it as
    (what was done, 2-D array in 0..1), for showing the recipe (notebooks/03_inference.ipynb)."""
    note = steps.append if steps is not None else lambda step: None
    gray = to_gray(image)
    note(("grey, 0..1", gray))
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    inverted = background > 0.5  # dark ink on light paper
    if inverted:
        gray, background = 1 - gray, 1 - background
        note(("inverted: light ink on dark, as in MNIST", gray))
    contrast = float(gray.max()) - background
    if contrast < MIN_CONTRAST:
        return Prepared(None, inverted, "no digit found: the image is blank or has too little contrast")
    ink = np.clip((gray - background) / contrast, 0, 1)
    ink[ink < INK_THRESHOLD] = 0
    note(("background to 0, contrast stretched, faint pixels dropped", ink))
    rows, cols = np.nonzero(ink)
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    note(("cropped to the ink", crop))

    height, width = crop.shape
    scale = 20.0 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    small = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize(size, resample), dtype=np.float32)
    small = np.clip(small, 0, 1)

    canvas = np.zeros((28, 28), dtype=np.float32)
    top, left = (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    note(("longer side scaled to 20 pixels, placed on 28x28", canvas))
    digit = _center_of_mass_to_middle(canvas)
    note(("centre of mass moved to the middle", digit))
    return Prepared(digit, inverted)


def _center_of_mass_to_middle(canvas: np.ndarray) -> np.ndarray:
    total = canvas.sum()
    ys, xs = np.indices(canvas.shape)
    # MNIST's digits have their centre of mass at pixel (14, 14), within half a pixel
    dy = round(14.0 - float((ys * canvas).sum() / total))
    dx = round(14.0 - float((xs * canvas).sum() / total))
    rows, cols = np.nonzero(canvas)
    # never push ink out of the field
    dy = int(np.clip(dy, -rows.min(), 27 - rows.max()))
    dx = int(np.clip(dx, -cols.min(), 27 - cols.max()))
    return np.roll(canvas, (dy, dx), axis=(0, 1))


def image_paths(spec: str | Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """A file, a folder (its images, sorted) or a glob -> (image paths, [(spec, error)] for what matched nothing)."""
    spec = str(spec)
    path = Path(spec)
    if any(ch in spec for ch in "*?["):
        anchor = Path(spec).anchor
        matches = sorted(Path(anchor).glob(spec[len(anchor) :])) if anchor else sorted(Path().glob(spec))
        files = [p for p in matches if p.is_file()]
        return (files, []) if files else ([], [(spec, f"{spec}: the pattern matches no file")])
    if path.is_dir():
        entries = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        files = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        # named, so the user knows they were not predicted (hidden files such as .DS_Store are not)
        skipped = [
            (str(p), f"{p}: skipped, {p.suffix or 'no extension'} is not an image type predict reads ({suffixes})")
            for p in entries
            if p.suffix.lower() not in IMAGE_SUFFIXES
        ]
        if not files:
            return [], [(spec, f"{spec}: the folder has no images ({suffixes})"), *skipped]
        return files, skipped
    if not path.exists():
        return [], [(spec, f"{spec}: no such file or folder")]
    return [path], []
