"""ssdn.nets.padding: per-side and square sizes, numpy-exact mirror padding (also for pads larger than the image),
crop."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from ssdn.nets import (
    common_padded_size,
    crop,
    mirror_pad,
    pad_to_multiple,
    pad_to_square,
    padded_shape,
    padded_size,
)

# (h, w) of the evaluation images, from ../shared/data/*/sizes.tsv (width, height there).
KODAK = [(512, 768)] * 18 + [(768, 512)] * 6
BSD300 = [(321, 481)] * 77 + [(481, 321)] * 23
SET14 = [
    (480, 500), (576, 720), (512, 512), (288, 352), (361, 250), (276, 276), (362, 500),
    (288, 352), (512, 512), (512, 512), (512, 768), (512, 512), (656, 529), (391, 586),
]  # fmt: skip


def _np_reflect(x: torch.Tensor, bottom: int, right: int) -> np.ndarray:
    pads = [(0, 0)] * (x.ndim - 2) + [(0, bottom), (0, right)]
    return np.pad(x.numpy(), pads, mode="reflect")


@pytest.mark.parametrize(
    ("h", "w", "expected"),
    [
        (1, 1, 32),
        (32, 32, 32),
        (33, 32, 64),
        (481, 321, 512),
        (321, 481, 512),
        (768, 512, 768),
        (276, 276, 288),
    ],
)
def test_padded_size(h: int, w: int, expected: int) -> None:
    assert padded_size(h, w) == expected


def test_padded_size_other_multiple_and_errors() -> None:
    assert padded_size(17, 5, multiple=8) == 24
    for bad in [(0, 5, 32), (5, -1, 32), (5, 5, 0)]:
        with pytest.raises(ValueError, match="positive"):
            padded_size(*bad)


@pytest.mark.parametrize(("sizes", "expected"), [(KODAK, 768), (BSD300, 512), (SET14, 768)])
def test_common_padded_size_of_the_test_sets(sizes: list[tuple[int, int]], expected: int) -> None:
    assert common_padded_size(sizes) == expected


@pytest.mark.parametrize(("folder", "expected"), [("kodak", 768), ("bsd300", 512), ("set14", 768)])
def test_common_padded_size_from_the_shared_data(data_root: Path, folder: str, expected: int) -> None:
    with open(data_root / folder / "sizes.tsv") as f:
        sizes = [(int(row["height"]), int(row["width"])) for row in csv.DictReader(f, delimiter="\t")]
    assert len(sizes) in (24, 100, 14)
    assert common_padded_size(sizes) == expected


def test_common_padded_size_needs_sizes() -> None:
    with pytest.raises(ValueError, match="at least one"):
        common_padded_size([])


@pytest.mark.parametrize("h", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("w", [1, 2, 4, 7])
@pytest.mark.parametrize(("bottom", "right"), [(0, 0), (1, 0), (0, 3), (2, 6), (7, 1), (13, 29)])
def test_mirror_pad_equals_numpy_reflect(h: int, w: int, bottom: int, right: int) -> None:
    x = torch.arange(2 * h * w).reshape(2, h, w)
    assert np.array_equal(mirror_pad(x, bottom, right).numpy(), _np_reflect(x, bottom, right))


def test_mirror_pad_face_png_to_768() -> None:
    """Set14 face.png (276×276) padded to Set14's common 768²: pads of 492, beyond torch's reflect mode."""
    x = torch.rand(1, 3, 276, 276, generator=torch.Generator().manual_seed(0))
    padded, hw = pad_to_square(x, size=768)
    assert hw == (276, 276) and padded.shape == (1, 3, 768, 768)
    assert np.array_equal(padded.numpy(), _np_reflect(x, 492, 492))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(5, 9), (3, 5, 9), (2, 3, 5, 9), (2, 1, 3, 5, 9)])
def test_mirror_pad_dtypes_and_leading_dims(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = (torch.rand(shape) * 200).to(dtype)
    out = mirror_pad(x, 11, 4)
    assert out.dtype == dtype and out.shape == (*shape[:-2], shape[-2] + 11, shape[-1] + 4)
    assert np.array_equal(out.float().numpy(), _np_reflect(x.float(), 11, 4))


def test_mirror_pad_gradient_counts_copies() -> None:
    x = torch.rand(1, 4, 3, dtype=torch.float64, requires_grad=True)
    mirror_pad(x, 9, 5).sum().backward()
    counts = _np_reflect(torch.arange(12.0).reshape(1, 4, 3), 9, 5)
    expected = np.bincount(counts.astype(int).ravel(), minlength=12).reshape(1, 4, 3)
    assert np.array_equal(x.grad.numpy(), expected)


def test_mirror_pad_errors() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        mirror_pad(torch.zeros(4, 4), -1, 0)
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        mirror_pad(torch.zeros(4), 1, 1)
    with pytest.raises(ValueError, match="empty"):
        mirror_pad(torch.zeros(0, 4), 1, 0)


@pytest.mark.parametrize(("h", "w", "side"), [(481, 321, 512), (321, 481, 512), (64, 64, 64), (20, 7, 32)])
def test_pad_to_square_round_trip(h: int, w: int, side: int) -> None:
    x = torch.rand(2, 3, h, w)
    padded, hw = pad_to_square(x)
    assert padded.shape == (2, 3, side, side) and hw == (h, w)
    assert torch.equal(padded[..., :h, :w], x)
    assert torch.equal(crop(padded, *hw), x)
    assert np.array_equal(padded.numpy(), _np_reflect(x, side - h, side - w))


@pytest.mark.parametrize(
    ("h", "w", "shape"),
    [(512, 768, (512, 768)), (481, 321, (512, 352)), (100, 2000, (128, 2016)), (1, 33, (32, 64))],
)
def test_pad_to_multiple_pads_each_side_on_its_own(h: int, w: int, shape: tuple[int, int]) -> None:
    assert padded_shape(h, w) == shape
    x = torch.rand(1, h, w)
    padded, hw = pad_to_multiple(x)
    assert padded.shape == (1, *shape) and hw == (h, w)
    assert torch.equal(crop(padded, *hw), x)
    assert np.array_equal(padded.numpy(), _np_reflect(x, shape[0] - h, shape[1] - w))


def test_padded_shape_other_multiple_and_errors() -> None:
    assert padded_shape(17, 5, multiple=8) == (24, 8)
    assert pad_to_multiple(torch.rand(2, 17, 5), multiple=8)[0].shape == (2, 24, 8)
    for bad in [(0, 5, 32), (5, -1, 32), (5, 5, 0)]:
        with pytest.raises(ValueError, match="positive"):
            padded_shape(*bad)


def test_pad_to_square_with_a_common_size() -> None:
    x = torch.rand(3, 321, 481)
    padded, hw = pad_to_square(x, size=common_padded_size(KODAK))
    assert padded.shape == (3, 768, 768) and hw == (321, 481)
    assert np.array_equal(padded.numpy(), _np_reflect(x, 447, 287))


def test_pad_to_square_errors() -> None:
    with pytest.raises(ValueError, match="at least"):
        pad_to_square(torch.zeros(1, 40, 40), size=32)
    with pytest.raises(ValueError, match="multiple of 32"):
        pad_to_square(torch.zeros(1, 40, 40), size=48)


def test_crop_errors() -> None:
    with pytest.raises(ValueError, match="cannot crop"):
        crop(torch.zeros(1, 8, 8), 9, 8)
    with pytest.raises(ValueError, match="cannot crop"):
        crop(torch.zeros(1, 8, 8), 0, 8)
