"""Small files the tests write: MNIST's IDX layout, crafted PNGs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of the given size, a few kilobytes on disk (the shape of a decompression bomb)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    raw = zlib.compress(row * height, 9)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def encoded(image, format: str, **options) -> bytes:
    from io import BytesIO

    out = BytesIO()
    image.save(out, format, **options)
    return out.getvalue()


def ico_wrapping(png: bytes, declared: int = 16) -> bytes:
    """An ICO whose directory declares a `declared`-pixel icon but holds `png`, of any size (Pillow decodes the
    frame while opening the file, before any size check could run)."""
    directory = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", declared, declared, 0, 0, 1, 32, len(png), 22)
    return directory + png


def hostile_images() -> dict[str, tuple[bytes, int]]:
    """Crafted files as an attacker sends them: {file name: (bytes, the status the service must answer)}. Each once
    ended in a 500, a traceback, or a decoder holding far more memory than its header said."""
    from PIL import Image, PngImagePlugin

    nan = np.full((64, 64), np.nan, np.float32)
    inf = np.zeros((64, 64), np.float32)
    inf[10:50, 30:34] = np.inf
    text = PngImagePlugin.PngInfo()
    for n in range(8):  # 8 MB of text unpacked while opening, from a file of a few kilobytes
        text.add_text(f"t{n}", "x" * 1_000_000, zip=True)
    return {
        # the service opens no TIFF (docs/security.md): these are for predict, which does
        "nan.tif": (encoded(Image.fromarray(nan, "F"), "TIFF"), 400),
        "inf.tif": (encoded(Image.fromarray(inf, "F"), "TIFF"), 400),
        "lab.tif": (encoded(Image.new("LAB", (64, 64), (80, 0, 0)), "TIFF"), 400),
        "nan.pfm": (b"Pf\n4 4\n-1.0\n" + np.full(16, np.nan, "<f4").tobytes(), 400),
        "cmyk.jpg": (encoded(Image.new("CMYK", (64, 64), (0, 0, 0, 255)), "JPEG"), 200),
        "i16.png": (encoded(Image.new("I;16", (64, 64), 3000), "PNG"), 200),
        "bomb.ico": (ico_wrapping(encoded(Image.new("L", (12000, 12000)), "PNG")), 400),
        # 6324 x 6324 RGBA, 155 KB: 40 Mpx, under the pixel limit, but 320 MB to decode and reduce
        "rgba.png": (encoded(Image.new("RGBA", (6324, 6324), (0, 0, 0, 0)), "PNG"), 413),
        # progressive: its decoder keeps 2 bytes per pixel and component at full size, whatever the draft scale
        "progressive.jpg": (encoded(Image.new("CMYK", (4096, 4096)), "JPEG", progressive=True), 413),
        "text.png": (encoded(Image.new("L", (64, 64)), "PNG", pnginfo=text), 400),
        "pixels.png": (huge_png(8000, 8000), 413),
        "truncated.png": (encoded(Image.new("L", (64, 64), 9), "PNG")[:60], 400),
    }
