"""ssdn.data.io: decoding rules (gamma, EXIF, modes, 16-bit), errors, and listing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from ssdn.data.io import ImageDecodeError, is_palette, list_images, load_as_stored, load_image, rgb_to_mono

# sha256 of the raw decoded RGB bytes (H, W, 3 row-major) of kodim01.png; cross-checked with an independent
# zlib + PNG-unfilter decoder, which by construction ignores the file's gAMA/sRGB chunks.
KODIM01_PIXELS_SHA256 = "a00210743353594464ac67e680a41710f484444ca5f9dfddeb570de25c428273"


def _save(tmp_path: Path, name: str, img: Image.Image, **kwargs) -> Path:
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def test_kodim01_pixels_are_the_stored_bytes(data_root: Path) -> None:
    pixels = load_image(data_root / "kodak" / "kodim01.png")
    assert pixels.shape == (512, 768, 3) and pixels.dtype == np.uint8
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == KODIM01_PIXELS_SHA256
    assert pixels[0, 0].tolist() == [99, 99, 99]
    assert pixels[100, 200].tolist() == [127, 72, 58]
    assert pixels[511, 767].tolist() == [0, 0, 0]


def test_png_gamma_chunk_is_not_applied(tmp_path: Path) -> None:
    a = (np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5).astype(np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", (100000).to_bytes(4, "big"))  # gamma 1.0 instead of the sRGB-ish 0.45455
    path = _save(tmp_path, "g.png", Image.fromarray(a), pnginfo=info)
    assert b"gAMA" in path.read_bytes()
    np.testing.assert_array_equal(load_image(path), a)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    a = (np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 10).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = _save(tmp_path, "o.png", Image.fromarray(a), exif=exif)
    out = load_image(path)
    assert out.shape == (3, 2, 3)
    np.testing.assert_array_equal(out, np.rot90(a, k=-1))


def test_grayscale_tiled_and_mono_conversion(tmp_path: Path) -> None:
    g = np.array([[0, 17], [128, 255]], dtype=np.uint8)
    path = _save(tmp_path, "l.png", Image.fromarray(g))
    rgb = load_image(path)
    assert rgb.shape == (2, 2, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], g)
    np.testing.assert_array_equal(load_image(path, channels=1)[:, :, 0], g)

    # RGB → mono: the mean of R, G, B rounded to nearest (61/3 = 20.33 → 20, 62/3 = 20.67 → 21)
    c = np.array([[[10, 20, 31], [10, 20, 32], [255, 255, 255], [0, 0, 1]]], dtype=np.uint8)
    path = _save(tmp_path, "c.png", Image.fromarray(c))
    assert load_image(path, channels=1)[0, :, 0].tolist() == [20, 21, 255, 0]
    assert rgb_to_mono(c).shape == (1, 4, 1) and rgb_to_mono(c)[0, :, 0].tolist() == [20, 21, 255, 0]


def test_alpha_is_dropped_not_composited(tmp_path: Path) -> None:
    rgba = np.array([[[200, 100, 50, 0], [1, 2, 3, 255]]], dtype=np.uint8)
    path = _save(tmp_path, "a.png", Image.fromarray(rgba, mode="RGBA"))
    assert load_image(path).tolist() == [[[200, 100, 50], [1, 2, 3]]]
    la = np.array([[[77, 0], [9, 128]]], dtype=np.uint8)
    path = _save(tmp_path, "la.png", Image.fromarray(la, mode="LA"))
    assert load_image(path, channels=1)[0, :, 0].tolist() == [77, 9]
    assert load_image(path)[0].tolist() == [[77, 77, 77], [9, 9, 9]]


def test_palette_and_bilevel_and_cmyk(tmp_path: Path) -> None:
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    p.putpixel((0, 0), 1)
    p.putpixel((1, 0), 2)
    assert load_image(_save(tmp_path, "p.png", p)).tolist() == [[[255, 0, 0], [0, 0, 255]]]

    b = Image.new("1", (2, 1))
    b.putpixel((1, 0), 1)
    assert load_image(_save(tmp_path, "b.png", b), channels=1)[0, :, 0].tolist() == [0, 255]

    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putpixel((0, 0), (0, 0, 0, 0))
    cmyk.putpixel((1, 0), (0, 255, 255, 0))
    assert load_image(_save(tmp_path, "k.tif", cmyk)).tolist() == [[[255, 255, 255], [255, 0, 0]]]


def test_sixteen_bit_scaled_by_257_rounded(tmp_path: Path) -> None:
    v = np.array([[0, 128, 129, 257, 32896, 65535, 65407]], dtype=np.uint16)
    path = _save(tmp_path, "w.png", Image.fromarray(v))
    assert Image.open(path).mode.startswith("I")
    # v/257: 0, 0.498, 0.502, 1, 128, 255, 254.502 (257 is odd, so v/257 is never exactly .5)
    assert load_image(path, channels=1)[0, :, 0].tolist() == [0, 0, 1, 1, 128, 255, 255]
    assert load_image(path).shape == (1, 7, 3)

    big = _save(tmp_path, "i.tif", Image.fromarray(np.array([[0, 70000]], dtype=np.int32)))
    with pytest.raises(ImageDecodeError, match=r"i\.tif.*0\.\.65535"):
        load_image(big)


def test_float_mode_rejected(tmp_path: Path) -> None:
    path = _save(tmp_path, "f.tif", Image.fromarray(np.zeros((2, 2), dtype=np.float32)))
    with pytest.raises(ImageDecodeError, match=r"f\.tif.*'F'"):
        load_image(path)


def test_undecodable_and_truncated_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(ImageDecodeError, match=r"junk\.png"):
        load_image(junk)

    rng = np.random.default_rng(0)
    good = _save(tmp_path, "good.png", Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageDecodeError, match=r"cut\.png"):
        load_image(cut)

    jpg = _save(tmp_path, "good.jpg", Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    cut_jpg = tmp_path / "cut.jpg"
    cut_jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    with pytest.raises(ImageDecodeError, match=r"cut\.jpg") as info:
        load_image(cut_jpg)
    assert isinstance(info.value, ValueError)

    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="channels"):
        load_image(good, channels=2)


def test_list_images(tmp_path: Path) -> None:
    img = Image.new("RGB", (1, 1))
    for name in ("b.PNG", "a.jpg", "c.JpEg", "d.bmp", "e.tif", "f.TIFF", "g.webp"):
        img.save(
            tmp_path / name,
            format={"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF"}.get(
                name.rsplit(".", 1)[1].lower(), name.rsplit(".", 1)[1].upper()
            ),
        )
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    img.save(tmp_path / "sub" / "0.png")
    (tmp_path / "dir.png").mkdir()  # a folder with an image suffix is not an image

    names = [p.name for p in list_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "c.JpEg", "d.bmp", "e.tif", "f.TIFF", "g.webp"]
    rec = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)]
    assert rec == [*names, "sub/0.png"]

    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")


def test_load_as_stored_keeps_channels_and_depth(tmp_path: Path) -> None:
    """What ``python -m ssdn.denoise`` reads: gray stays (H, W, 1) at its depth (PIL's I;16 included), gray +
    alpha splits off the alpha, a palette image gives its colours."""
    deep = np.random.default_rng(0).integers(0, 65536, (6, 5), dtype=np.uint16)
    pixels, alpha = load_as_stored(_save(tmp_path, "deep.png", Image.fromarray(deep)))
    assert pixels.dtype == np.uint16 and pixels.shape == (6, 5, 1) and alpha is None
    assert np.array_equal(pixels[:, :, 0], deep)
    la = np.random.default_rng(1).integers(0, 256, (6, 5, 2), dtype=np.uint8)
    pixels, alpha = load_as_stored(_save(tmp_path, "la.png", Image.fromarray(la)))
    assert pixels.shape == (6, 5, 1) and alpha is not None
    assert np.array_equal(pixels[:, :, 0], la[:, :, 0]) and np.array_equal(alpha[:, :, 0], la[:, :, 1])
    rgb = Image.fromarray(np.random.default_rng(2).integers(0, 256, (6, 5, 3), dtype=np.uint8))
    palette = _save(tmp_path, "p.png", rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4))
    pixels, alpha = load_as_stored(palette)
    assert np.array_equal(pixels, np.asarray(Image.open(palette).convert("RGB"))) and alpha is None
    assert is_palette(palette) and not is_palette(tmp_path / "la.png")
