"""Image -> 28x28 model input, on renderings of real test digits and on broken files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

import renderings as examples
from helpers import encoded, huge_png
from mnist_lightning.data.files import load_split
from mnist_lightning.inference import preprocess


@pytest.fixture(scope="module")
def digits(mnist_dir):
    images, labels = load_split(mnist_dir, train=False)
    return images[:20].numpy(), labels[:20].numpy()


def prepare_bytes(content: bytes, tmp_path, name="x.png"):
    path = tmp_path / name
    path.write_bytes(content)
    return preprocess.prepare(preprocess.open_image(path))


def correlation(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_mnist_crops_pass_through_unchanged_in_meaning(digits, tmp_path):
    images, _ = digits
    for image in images:
        ready = prepare_bytes(examples.encode(Image.fromarray(image), "PNG"), tmp_path)
        assert not ready.inverted
        assert ready.digit.shape == (28, 28) and ready.digit.dtype == np.float32
        assert correlation(ready.digit, image / 255) > 0.8


@pytest.mark.parametrize("variant", [v for v in examples.variants(np.zeros((28, 28), np.uint8)) if v != "mnist"])
def test_every_rendering_becomes_an_mnist_style_digit(variant, digits, tmp_path):
    images, _ = digits
    for image in images[:5]:
        suffix, content = examples.variants(image)[variant]
        ready = prepare_bytes(content, tmp_path, "x" + suffix)
        digit = ready.digit
        assert digit is not None and digit.min() >= 0 and digit.max() <= 1
        rows, cols = np.nonzero(digit > 0.05)
        assert 18 <= max(np.ptp(rows), np.ptp(cols)) + 1 <= 22  # longer side scaled to about 20 px
        ys, xs = np.indices(digit.shape)
        com = ((ys * digit).sum() / digit.sum(), (xs * digit).sum() / digit.sum())
        assert abs(com[0] - 14) <= 0.5 and abs(com[1] - 14) <= 0.5  # centred by centre of mass, as MNIST
        assert digit[0].max() == 0 and digit[:, 0].max() == 0  # dark background, like MNIST
        reference = preprocess.prepare(Image.fromarray(image)).digit
        assert correlation(digit, reference) > 0.7, variant


def test_polarity_is_detected(digits):
    image = digits[0][0]
    assert preprocess.prepare(Image.fromarray(255 - image)).inverted
    assert not preprocess.prepare(Image.fromarray(image)).inverted


def test_exif_orientation_is_applied(digits, tmp_path):
    image = digits[0][0]
    upright = prepare_bytes(examples.variants(image)["paper"][1], tmp_path, "a.jpg").digit
    rotated = prepare_bytes(examples.variants(image)["exif_rotated"][1], tmp_path, "b.jpg").digit
    assert correlation(upright, rotated) > 0.95


@pytest.mark.parametrize("fill", [0, 255, 128])
def test_blank_image_is_no_digit(fill):
    ready = preprocess.prepare(Image.new("L", (64, 64), fill))
    assert ready.digit is None and "no digit found" in ready.note


def test_faint_noise_is_no_digit():
    noise = np.random.default_rng(0).integers(120, 140, (50, 50)).astype(np.uint8)
    assert preprocess.prepare(Image.fromarray(noise)).digit is None


def test_missing_folder_and_non_image(tmp_path):
    with pytest.raises(preprocess.ImageError, match="no such file"):
        preprocess.open_image(tmp_path / "nope.png")
    with pytest.raises(preprocess.ImageError, match="not a file"):
        preprocess.open_image(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("just text")
    with pytest.raises(preprocess.ImageError, match="notes.png: not a readable image"):
        preprocess.open_image(text)


def test_truncated_file(digits, tmp_path):
    content = examples.variants(digits[0][0])["paper"][1]
    path = tmp_path / "cut.jpg"
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(preprocess.ImageError, match="cut.jpg: not a readable image"):
        preprocess.open_image(path)


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "large.png"
    path.write_bytes(huge_png(12000, 12000))
    with pytest.raises(preprocess.ImageError, match="12000x12000 pixels is over the limit of 40,000,000"):
        preprocess.open_image(path)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(huge_png(20000, 20000))
    with pytest.raises(preprocess.ImageError, match="bomb.png: refused as a decompression bomb"):
        preprocess.open_image(bomb)
    small = tmp_path / "small.png"
    small.write_bytes(huge_png(100, 100))
    with pytest.raises(preprocess.ImageError, match="over the limit of 5,000"):
        preprocess.open_image(small, max_pixels=5000)


def test_every_mode_the_formats_open_is_read_as_grey_or_refused_in_one_error():
    """Modes Pillow cannot convert to L (LAB, HSV, La) have their own reading; float images with NaN are refused."""
    drawn = np.zeros((64, 64), np.uint8)
    drawn[12:52, 30:35] = 255  # a stroke: a one
    grey = Image.fromarray(drawn)
    modes = {
        "LAB": Image.merge("LAB", (grey, Image.new("L", (64, 64), 128), Image.new("L", (64, 64), 128))),
        "HSV": Image.merge("HSV", (Image.new("L", (64, 64)), Image.new("L", (64, 64)), grey)),
        "La": Image.merge("LA", (grey, Image.new("L", (64, 64), 255))).convert("La"),
        "CMYK": ImageOps.invert(grey.convert("RGB")).convert("CMYK"),
        "I;16": grey.convert("I").point(lambda v: v * 256).convert("I;16"),
    }
    reference = preprocess.prepare(grey).digit
    for mode, image in modes.items():
        assert image.mode == mode
        ready = preprocess.prepare(image)
        assert ready.digit is not None and correlation(ready.digit, reference) > 0.9, mode
    nan = Image.fromarray(np.where(drawn > 0, np.nan, 0).astype(np.float32), "F")
    with pytest.raises(preprocess.ImageError, match="holds NaN or infinite values"):
        preprocess.prepare(nan)


def test_what_decoding_holds_is_counted_from_the_header_before_it_is_decoded():
    """The cost the service's budget is charged for: pixels x bytes per pixel of the mode, more for decoders that
    hold more (WebP, progressive JPEG), and only the formats a digit comes in are opened at all."""
    costs = {
        "L": (Image.new("L", (1000, 1000)), "PNG", {}, 1_000_000),
        "RGBA": (Image.new("RGBA", (1000, 1000)), "PNG", {}, 8_000_000),
        "P": (Image.new("P", (1000, 1000)), "GIF", {}, 9_000_000),
        "WebP": (Image.new("RGB", (1000, 1000)), "WEBP", {}, 16_000_000),
        "baseline JPEG": (Image.new("RGB", (4000, 4000)), "JPEG", {}, 16_000_000),  # drafted to 2000x2000
        "progressive JPEG": (Image.new("RGB", (4000, 4000)), "JPEG", {"progressive": True}, 16_000_000 + 96_000_000),
    }
    for what, (image, format, options, expected) in costs.items():
        opened = Image.open(io.BytesIO(encoded(image, format, **options)))
        full_size = opened.size
        opened.draft(None, (preprocess.WORKING_SIZE, preprocess.WORKING_SIZE))
        assert preprocess.decoded_bytes(opened, full_size) == expected, what
    tiff = encoded(Image.new("L", (8, 8)), "TIFF")
    assert preprocess.load_digit(tiff, "scan.tif").digit is None  # predict reads TIFF
    service = preprocess.DecodeLimits(formats=preprocess.SERVICE_FORMATS)
    with pytest.raises(preprocess.ImageError, match="scan.tif: not a readable image \\(the formats read here are PNG"):
        preprocess.load_digit(tiff, "scan.tif", service)


def test_image_paths_file_folder_glob(tmp_path):
    (tmp_path / "b.png").write_bytes(examples.encode(Image.new("L", (8, 8)), "PNG"))
    (tmp_path / "a.jpg").write_bytes(examples.encode(Image.new("RGB", (8, 8)), "JPEG"))
    (tmp_path / "readme.txt").write_text("not an image")
    files, skipped = preprocess.image_paths(tmp_path)
    assert files == [tmp_path / "a.jpg", tmp_path / "b.png"]
    assert [path for path, _ in skipped] == [str(tmp_path / "readme.txt")]
    assert "skipped, .txt is not an image type predict reads" in skipped[0][1]
    assert preprocess.image_paths(tmp_path / "*.png") == ([tmp_path / "b.png"], [])
    assert preprocess.image_paths(tmp_path / "b.png") == ([tmp_path / "b.png"], [])
    files, errors = preprocess.image_paths(tmp_path / "missing.png")
    assert files == [] and "no such file or folder" in errors[0][1]
    empty = tmp_path / "empty"
    empty.mkdir()
    files, errors = preprocess.image_paths(empty)
    assert files == [] and "the folder has no images" in errors[0][1]
    files, errors = preprocess.image_paths(tmp_path / "*.bmp")
    assert files == [] and "matches no file" in errors[0][1]


def test_preprocess_imports_no_lightning_or_hydra():
    import subprocess
    import sys

    code = (
        "import sys, mnist_lightning.inference.preprocess; "
        "print(sorted(m for m in ('lightning', 'hydra', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_jpeg_roundtrip_of_light_on_dark(digits, tmp_path):
    image = digits[0][0]
    buffer = io.BytesIO()
    Image.fromarray(image).resize((112, 112)).save(buffer, format="JPEG", quality=70)
    ready = prepare_bytes(buffer.getvalue(), tmp_path, "j.jpg")
    assert not ready.inverted and correlation(ready.digit, preprocess.prepare(Image.fromarray(image)).digit) > 0.8


def test_prepare_can_show_each_step_and_ends_with_the_digit_it_returns():
    paper = np.full((60, 80), 230, np.uint8)
    paper[10:40, 50:58] = 20  # a dark stroke, off-centre, on light paper
    steps = []
    prepared = preprocess.prepare(Image.fromarray(paper), steps)
    names = [name for name, _ in steps]
    assert len(steps) == 6 and names[1].startswith("inverted") and names[-1] == "centre of mass moved to the middle"
    assert steps[0][1].shape == (60, 80) and steps[3][1].shape == (30, 8)  # the crop is the stroke
    assert np.array_equal(steps[-1][1], prepared.digit)
    unchanged = preprocess.prepare(Image.fromarray(255 - paper))
    assert np.array_equal(unchanged.digit, prepared.digit) and not unchanged.inverted
