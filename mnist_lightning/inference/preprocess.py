"""Any image of a digit -> the 28x28 input the model was trained on, the way MNIST itself was made.

Imports neither Lightning nor Hydra, so the predict CLI, a server and notebooks share it and start fast.
MNIST's recipe: light digit on a dark background, the digit's bounding box scaled so its longer side
is 20 px (aspect ratio kept, anti-aliased), placed in a 28x28 field with its centre of mass in the middle.

Decoding is bounded for untrusted files: only the formats a digit comes in are opened, the pixel count and the
decoded size (pixels x bytes per pixel of the image's mode) are checked from the header before any pixel is
decoded, JPEGs are decoded at a reduced scale, and every image is reduced to at most WORKING_SIZE pixels a side
at once, so nothing larger than the decoded file is ever held and no float copy of a large image is made.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from mnist_lightning.errors import UserError

MAX_PIXELS = 40_000_000  # larger images are refused (decompression bombs, accidental photos of posters)
# what decoding one image may hold in memory, from its header: 40 Mpx of greyscale or 1-bit, 20 Mpx of RGB,
# 10 Mpx of RGBA
MAX_DECODED_BYTES = 80_000_000
# the formats a photo, a scan or a drawing of a digit comes in (JPEG includes MPO; PPM also reads PGM, PBM and
# PFM); containers such as ICO, which decode their frames while being opened, and formats no one draws digits in
# are not opened at all
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
# what the service opens: no TIFF, whose opening alone (before any size is known) can take 40 times the file's
# size in memory and seconds of CPU (a 9 MB TIFF of a million one-row strips: 350 MB, 7 s)
SERVICE_FORMATS = tuple(name for name in FORMATS if name != "TIFF")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}
# the longer side an image is reduced to right after decoding: the digit ends up 20 px high, so a digit a
# fiftieth of the picture's height still keeps its shape
WORKING_SIZE = 1024
INK_THRESHOLD = 0.15  # share of full contrast above which a pixel counts as part of the digit
MIN_CONTRAST = 0.2  # an image whose darkest and lightest parts differ by less holds no digit
# bytes per pixel while an image of this mode is decoded and reduced, from the sizes Pillow works in: 1 byte a
# pixel for 1, L and P, 2 for I;16, 4 for every other mode; reducing LA and RGBA makes a premultiplied copy, and the
# modes of REDUCIBLE_AS are converted first (P may become RGBA, which is then premultiplied)
BYTES_PER_PIXEL = {"1": 2, "L": 1, "P": 9, "PA": 12, "LA": 8, "RGBA": 8, "I;16": 6, "I;16L": 6, "I;16B": 6, "I;16N": 6}
OTHER_MODES_BYTES = 4
# formats whose decoders hold more than the image: WebP keeps two canvases and a copy (about 16 bytes a pixel in
# all); a progressive JPEG keeps 2 bytes per pixel and component at full resolution, whatever its draft scale
WEBP_BYTES = 16
PROGRESSIVE_JPEG_BYTES = 2
# a digit's PNG has no use for text chunks; Pillow's own limits let one file unpack 64 MB of them while opening
PngImagePlugin.MAX_TEXT_CHUNK = PngImagePlugin.MAX_TEXT_MEMORY = 1_000_000
# converted before reducing: box-averaging palette indices or single bits would be meaningless
REDUCIBLE_AS = {"1": "L", "P": "RGBA", "PA": "RGBA", "I;16": "I", "I;16L": "I", "I;16B": "I", "I;16N": "I"}


class ImageError(UserError):
    """This file cannot be turned into a model input; the message says why."""


class ImageTooLarge(ImageError):
    """The image has more pixels, or would take more memory to decode, than allowed."""


@dataclass(frozen=True)
class DecodeLimits:
    """What decoding one image may cost. `reserve(n)` is entered around the decoding of an image that takes n
    bytes: a server passes a shared budget (serving/limits.py) that makes concurrent large decodes wait."""

    max_pixels: int = MAX_PIXELS
    max_bytes: int = MAX_DECODED_BYTES
    reserve: Callable[[int], AbstractContextManager] = field(default=lambda cost: contextlib.nullcontext())
    formats: tuple[str, ...] = FORMATS


@dataclass
class Prepared:
    """`digit` is (28, 28) float32 in [0, 1], light on dark like MNIST; None when no digit was found."""

    digit: np.ndarray | None
    inverted: bool
    note: str = ""


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS, limits: DecodeLimits | None = None) -> Image.Image:
    """Open and decode an image file (reduced to WORKING_SIZE), with EXIF orientation applied. Raises ImageError."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    return decode_image(path, str(path), max_pixels, limits)


def decoded_bytes(image: Image.Image, full_size: tuple[int, int] | None = None) -> int:
    """Memory that decoding and reducing `image` holds at its peak, from its header (after `draft`; `full_size`:
    its size before, which a progressive JPEG's decoder works at)."""
    pixels = image.width * image.height
    if image.format == "WEBP":
        return pixels * WEBP_BYTES
    cost = pixels * BYTES_PER_PIXEL.get(image.mode, OTHER_MODES_BYTES)
    if image.format in ("JPEG", "MPO") and image.info.get("progressive"):
        width, height = full_size or image.size
        cost += width * height * len(getattr(image, "layer", None) or image.getbands()) * PROGRESSIVE_JPEG_BYTES
    return cost


def decode_image(
    source: str | Path | bytes | BinaryIO, name: str, max_pixels: int = MAX_PIXELS, limits: DecodeLimits | None = None
) -> Image.Image:
    """Decode an image (a path, its bytes, or a file object), reduced to at most WORKING_SIZE pixels a side, with
    EXIF orientation applied.

    Raises ImageError naming `name` for an empty, unknown, truncated or corrupt image, ImageTooLarge for one over
    the pixel limit or the decoded-bytes limit (both checked from the header, before the pixels are decoded).
    """
    limits = limits or DecodeLimits(max_pixels=max_pixels)
    if isinstance(source, bytes):
        if not source:
            raise ImageError(f"{name}: empty file")
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limits below are stricter
            image = Image.open(source, formats=limits.formats)
        with image:
            if image.width * image.height > limits.max_pixels:
                raise ImageTooLarge(
                    f"{name}: {image.width}x{image.height} pixels is over the limit of {limits.max_pixels:,}; "
                    f"scale it down first"
                )
            full_size = image.size
            image.draft(None, (WORKING_SIZE, WORKING_SIZE))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when enough
            cost = decoded_bytes(image, full_size)
            if cost > limits.max_bytes:
                raise ImageTooLarge(
                    f"{name}: decoding {full_size[0]}x{full_size[1]} pixels of mode {image.mode} takes "
                    f"{cost / 1e6:,.0f} MB, over the limit of {limits.max_bytes / 1e6:,.0f} MB; scale it down or "
                    f"save it in greyscale first"
                )
            with limits.reserve(cost):
                image.load()
                reduced = reduce(image)
                image.close()  # the decoded pixels are freed before the budget is given back
            return ImageOps.exif_transpose(reduced)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name}: refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:  # its message names a BytesIO object, of no use to the reader
        raise ImageError(
            f"{name}: not a readable image (the formats read here are {', '.join(limits.formats)})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's errors for truncated or corrupt files
        raise ImageError(f"{name}: not a readable image ({exc})") from exc


def reduce(image: Image.Image) -> Image.Image:
    """A copy at most WORKING_SIZE pixels a side (box-averaged, so strokes keep their ink), detached from its file."""
    if image.mode in REDUCIBLE_AS:
        target = REDUCIBLE_AS[image.mode]
        if image.mode == "P" and "transparency" not in image.info:
            target = "RGB"
        image = image.convert(target)
    factor = math.ceil(max(image.size) / WORKING_SIZE)
    return image.reduce(factor) if factor > 1 else image.copy()


def to_gray(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> 2-D float32 in [0, 1]; transparency is composited onto a contrasting background.
    Raises ImageError for float images holding NaN or infinities and for colour modes with no grey reading."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ImageError("the image holds NaN or infinite values: save it as an ordinary 8- or 16-bit image")
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        return np.clip(array / top, 0, 1)
    if image.mode in ("LAB", "HSV"):  # lightness and value are their grey reading; Pillow converts neither to L
        return np.asarray(image.getchannel("L" if image.mode == "LAB" else "V"), dtype=np.float32) / 255
    try:
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode == "La":  # premultiplied grey and alpha (TIFF): Pillow converts it to LA only
            image = image.convert("LA")
        if image.mode in ("LA", "PA", "RGBa") or (image.mode == "L" and "transparency" in image.info):
            image = image.convert("RGBA")
    except ValueError as exc:
        raise ImageError(f"colour mode {image.mode} cannot be read: save the image as RGB or greyscale") from exc
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
    try:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255
    except ValueError as exc:  # a mode Pillow cannot turn into grey
        raise ImageError(
            f"colour mode {image.mode} cannot be read as grey: save the image as RGB or greyscale"
        ) from exc


def load_digit(source: str | Path | bytes | BinaryIO, name: str, limits: DecodeLimits | None = None) -> Prepared:
    """decode_image, then prepare: the 28x28 digit of one file, with nothing of the decoded image kept. Every
    problem of the file is an ImageError naming `name`."""
    image = decode_image(source, name, limits=limits)
    try:
        return prepare(image)
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}") from None


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
