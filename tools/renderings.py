"""Real-world-looking renderings of MNIST test digits, for `make predict` and the preprocessing tests.

`python tools/renderings.py [DATA_DIR] [OUT_DIR]` (`make examples`) writes the images in `examples/`:
each is a real test digit drawn the way people's images come (dark ink on paper, a large canvas,
off-centre, transparent background, JPEG, 16-bit, palette, CMYK, rotated by EXIF), named
`<true digit>_<variant>.<ext>`.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def _ink(digit: np.ndarray, scale: int) -> Image.Image:
    """The digit (light on dark, uint8) enlarged `scale` times, smoothly."""
    return Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)


def paper(digit: np.ndarray) -> Image.Image:
    """Dark pen on light grey paper, large and off-centre, RGB."""
    ink = np.asarray(_ink(digit, 8), dtype=np.float32) / 255
    sheet = np.full((360, 480), 0.93, dtype=np.float32)
    sheet[40 : 40 + 224, 200 : 200 + 224] -= ink * 0.85
    gray = (sheet.clip(0, 1) * 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def transparent(digit: np.ndarray) -> Image.Image:
    """Black strokes on a transparent background (a drawing app's export), RGBA."""
    alpha = _ink(digit, 6)
    canvas = Image.new("RGBA", (240, 200), (0, 0, 0, 0))
    stroke = Image.new("RGBA", alpha.size, (0, 0, 0, 255))
    stroke.putalpha(alpha)
    canvas.alpha_composite(stroke, (60, 20))
    return canvas


def off_centre(digit: np.ndarray) -> Image.Image:
    """Light digit, small, in a corner of a large dark canvas, grayscale."""
    canvas = Image.new("L", (256, 256), 0)
    canvas.paste(_ink(digit, 2), (10, 150))
    return canvas


def blue_ink(digit: np.ndarray) -> Image.Image:
    """Blue ballpoint on white, RGB."""
    ink = np.asarray(_ink(digit, 5), dtype=np.float32)[..., None] / 255
    white, blue = np.array([255, 255, 255], np.float32), np.array([20, 40, 160], np.float32)
    return Image.fromarray((white * (1 - ink) + blue * ink).astype(np.uint8), "RGB")


def sixteen_bit(digit: np.ndarray) -> Image.Image:
    """Light on dark with 16-bit depth (scientific cameras, scanners)."""
    return Image.fromarray(np.asarray(_ink(digit, 4), dtype=np.uint16) * 257)


def palette(digit: np.ndarray) -> Image.Image:
    """Dark on light in an indexed-colour (P mode) image, as GIFs are."""
    return Image.fromarray(255 - np.asarray(_ink(digit, 3))).convert("P")


def cmyk(digit: np.ndarray) -> Image.Image:
    """Dark on light, CMYK (print workflows)."""
    return paper(digit).convert("CMYK")


def exif_rotated(digit: np.ndarray) -> tuple[Image.Image, Image.Exif]:
    """Stored rotated by 90 degrees with the EXIF orientation that turns it upright (phone photos)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # display: rotate 90 degrees clockwise
    return paper(digit).rotate(90, expand=True), exif


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def variants(digit: np.ndarray) -> dict[str, tuple[str, bytes]]:
    """name -> (file suffix, encoded bytes) for every rendering of one 28x28 uint8 digit."""
    rotated, exif = exif_rotated(digit)
    return {
        "mnist": (".png", encode(Image.fromarray(digit), "PNG")),
        "paper": (".jpg", encode(paper(digit), "JPEG", quality=85)),
        "transparent": (".png", encode(transparent(digit), "PNG")),
        "off_centre": (".png", encode(off_centre(digit), "PNG")),
        "blue_ink": (".png", encode(blue_ink(digit), "PNG")),
        "16bit": (".png", encode(sixteen_bit(digit), "PNG")),
        "palette": (".gif", encode(palette(digit), "GIF")),
        "cmyk": (".jpg", encode(cmyk(digit), "JPEG", quality=90)),
        "exif_rotated": (".jpg", encode(rotated, "JPEG", quality=90, exif=exif)),
    }


def main(data_dir: str = "data", out_dir: str = "examples") -> None:
    from mnist_lightning.data.files import load_split

    images, labels = load_split(data_dir, train=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # one variant per digit 0..8, each from that digit's first test image
    names = list(variants(images[0].numpy()))
    for digit, name in enumerate(names):
        index = int((labels == digit).nonzero()[0])
        suffix, content = variants(images[index].numpy())[name]
        (out / f"{digit}_{name}{suffix}").write_bytes(content)
    print(f"wrote {len(names)} images to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
