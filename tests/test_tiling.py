"""Tiled inference: the same outputs as the whole image, for any shape, with memory bounded by the tile."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from ssdn.eval.evaluator import evaluate
from ssdn.eval.protocol import protocol_configs
from ssdn.eval.settings import EvalSettings
from ssdn.inference.tiling import (
    axis_weights,
    check_tiling,
    denoise_tiled,
    fits_one_tile,
    tile_count,
    tile_shape,
    tile_starts,
)
from ssdn.nets import UNet, crop, pad_to_multiple


def _identity(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input itself and a constant: tiled, they give back the image and the weight sum."""
    return {"x": x.clone(), "one": torch.ones_like(x[:, :1])}


def _small_net() -> nn.Module:
    """Two 3×3 convs: receptive radius 2, well inside the 8 px an overlap of 32 drops at each tile edge."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 3, 3, padding=1)).eval()


@pytest.mark.parametrize("length", [1, 31, 64, 65, 97, 200, 1000])
def test_axis_weights_sum_to_one_and_cover_the_axis(length: int) -> None:
    w = axis_weights(length, 64, 32)
    starts = tile_starts(length, 64, 32)
    total = torch.zeros(max(starts) + 64, dtype=torch.float64)
    for s, row in zip(starts, w, strict=True):
        total[s : s + 64] += row
    assert torch.allclose(total[:length], torch.ones(length, dtype=torch.float64), atol=1e-15)
    assert starts[-1] + 64 >= length and all(s % 32 == 0 for s in starts)


@pytest.mark.parametrize(
    ("h", "w"), [(130, 170), (100, 2000), (2000, 100), (1, 300), (300, 1), (1, 1), (7, 5)]
)
def test_identity_is_reproduced_exactly_for_any_shape(h: int, w: int) -> None:
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(h * w))
    out = denoise_tiled(_identity, image, tile=64, overlap=32)
    assert out["x"].shape == (3, h, w) and out["one"].shape == (1, h, w)
    torch.testing.assert_close(out["one"], torch.ones(1, h, w), atol=2e-7, rtol=0)
    torch.testing.assert_close(out["x"], image, atol=1e-6, rtol=0)


def test_a_net_within_the_margin_gives_the_whole_image_output() -> None:
    """Receptive radius 2 <= overlap/4: tiles equal the whole padded image, batch of two, ragged edges."""
    net = _small_net()
    image = torch.rand(2, 3, 150, 230, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        padded, (h, w) = pad_to_multiple(image)
        whole = crop(net(padded), h, w)
        calls: list[tuple[int, ...]] = []

        def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
            calls.append(tuple(x.shape))
            return {"out": net(x)}

        tiled = denoise_tiled(fn, image, tile=64, overlap=32)["out"]
    assert set(calls) == {(2, 3, 64, 64)} and len(calls) == tile_count(150, 230, 64, 32) == 4 * 7
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("h", "w"), [(100, 60), (50, 250), (250, 50)])
def test_an_image_that_fits_the_tiles_pixels_runs_whole_unsquared(h: int, w: int) -> None:
    """Padded H×W within tile² runs whole, each side padded to 32 only: 100×60 → 128×64; 50×250 → 64×256 (its
    padded square, 256², would be four times the 128² budget)."""
    net = _small_net()
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(2))
    calls: list[tuple[int, ...]] = []

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        calls.append(tuple(x.shape))
        return {"out": net(x)}

    with torch.no_grad():
        padded, _ = pad_to_multiple(image[None])
        expected = crop(net(padded), h, w)[0]
        out = denoise_tiled(fn, image, tile=128, overlap=64)["out"]
    assert calls == [(1, 3, -(-h // 32) * 32, -(-w // 32) * 32)] and tile_count(h, w, 128, 64) == 1
    assert torch.equal(out, expected)


@pytest.mark.parametrize(("h", "w", "shape", "count"), [(20, 700, (32, 128), 7), (700, 20, (128, 32), 7)])
def test_strips_are_cut_into_rectangular_tiles(h: int, w: int, shape: tuple[int, int], count: int) -> None:
    """A strip beyond the budget (32×704 padded > 128²) gets tiles as thick as its padded side, not squares,
    and still gives the whole image's output where the overlap covers the receptive field."""
    assert not fits_one_tile(h, w, 128) and tile_shape(h, w, 128) == shape
    net = _small_net()
    image = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(5))
    calls: list[tuple[int, ...]] = []

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        calls.append(tuple(x.shape))
        return {"out": net(x)}

    with torch.no_grad():
        padded, _ = pad_to_multiple(image)
        whole = crop(net(padded), h, w)
        tiled = denoise_tiled(fn, image, tile=128, overlap=32)["out"]
    assert set(calls) == {(2, 3, *shape)} and len(calls) == tile_count(h, w, 128, 32) == count
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


def test_the_blind_spot_net_runs_rectangles_whole_and_in_rectangular_tiles() -> None:
    """A 64×160 image fits a 128² tile's pixels: one 64×160 pass, the net's own output; with 64² tiles,
    32×64 tiles of a 32×300 strip, whose output keeps the blind spot."""
    torch.manual_seed(0)
    net = UNet(3, 3, blindspot=True).eval()
    image = torch.rand(3, 64, 160, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        whole = denoise_tiled(lambda x: {"out": net(x)}, image, tile=128, overlap=32)["out"]
        assert torch.equal(whole, net(image[None])[0])
    # 32 rows: no mirrored rows, which would hold a copy of the probed pixel that its output may read
    strip = torch.rand(3, 32, 300, generator=torch.Generator().manual_seed(7))
    changed = strip.clone()
    changed[:, 10, 150] = 1.0 - changed[:, 10, 150]
    with torch.no_grad():
        a, b = (
            denoise_tiled(lambda x: {"out": net(x)}, im, tile=64, overlap=32)["out"]
            for im in (strip, changed)
        )
    assert tile_shape(32, 300, 64) == (32, 64)
    assert torch.equal(a[:, 10, 150], b[:, 10, 150])
    assert not torch.equal(a[:, 9, 150], b[:, 9, 150]) and not torch.equal(a[:, 10, 151], b[:, 10, 151])


def test_tiles_keep_the_blind_spot() -> None:
    """Tiled, the blind-spot U-Net's output at an interior pixel still ignores that pixel's input.

    (How close tiles come to the whole image needs a trained net: a random U-Net's reach is the whole image,
    so bench/bench_denoise.py measures it on KODAK with a trained checkpoint.)"""
    torch.manual_seed(0)
    net = UNet(3, 3, blindspot=True).eval()
    image = torch.rand(3, 64, 128, generator=torch.Generator().manual_seed(3))
    changed = image.clone()
    changed[:, 30, 60] = 1.0 - changed[:, 30, 60]
    with torch.no_grad():
        a, b = (
            denoise_tiled(lambda x: {"out": net(x)}, im, tile=64, overlap=32)["out"]
            for im in (image, changed)
        )
    assert torch.equal(a[:, 30, 60], b[:, 30, 60])
    assert not torch.equal(a[:, 29, 60], b[:, 29, 60])  # its neighbours do see it


def test_keys_keep_only_the_outputs_asked_for() -> None:
    out = denoise_tiled(_identity, torch.rand(3, 100, 100), tile=64, overlap=32, keys=["x"])
    assert list(out) == ["x"]


def test_progress_is_called_once_per_tile() -> None:
    done: list[int] = []
    denoise_tiled(_identity, torch.rand(3, 100, 300), tile=64, overlap=32, progress=done.append)
    assert sum(done) == tile_count(100, 300, 64, 32) == 3 * 9


@pytest.mark.parametrize(("tile", "overlap"), [(48, 0), (0, 0), (64, 48), (64, 96), (64, -32)])
def test_bad_tiling_is_refused(tile: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="tile"):
        check_tiling(tile, overlap)


def test_memory_is_bounded_by_the_tile_not_the_image() -> None:
    """A 3000×2000 image through a 64-channel conv net under an address-space limit of 1 GB above the
    interpreter's: tiles need ~200 MB beyond the image and its output, the whole padded image 2.4 GB."""
    code = textwrap.dedent(
        """
        import resource, torch
        from torch import nn
        from ssdn.inference.tiling import denoise_tiled
        torch.set_num_threads(1)
        net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 3, 3, padding=1)).eval()
        size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, size + 2**30))
        image = torch.rand(3, 2000, 3000)
        with torch.no_grad():
            out = denoise_tiled(lambda x: {"out": net(x)}, image, tile=512, overlap=128)["out"]
        assert out.shape == (3, 2000, 3000)
        try:
            with torch.no_grad():
                net(torch.rand(1, 3, 3008, 3008))
        except (RuntimeError, MemoryError):
            print("whole image refused")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "whole image refused" in result.stdout


class _SmallNetDenoiser:
    """A network-like denoiser (square inputs) whose reach is inside the tiles' margin; records input sides."""

    name = "small-net"
    requires_square_multiple = 32

    def __init__(self) -> None:
        self.net = _small_net()
        self.sides: list[int] = []

    def denoise(self, noisy: torch.Tensor, params: torch.Tensor) -> dict[str, torch.Tensor]:
        self.sides.append(noisy.shape[-1])
        with torch.no_grad():
            return {"out": noisy + 0.01 * self.net(noisy)}


def test_evaluator_tiles_inputs_larger_than_its_tile_with_the_same_scores(data_root: Path) -> None:
    protocol = protocol_configs({"sets": "kodak", "repeats": 1, "limit": 2, "crop": 100}, ("gaussian", 25), 3)
    whole, tiled = _SmallNetDenoiser(), _SmallNetDenoiser()
    run = EvalSettings(root=data_root, progress=False, batch_size=2)
    expected = evaluate(whole, protocol, run)
    result = evaluate(tiled, protocol, replace(run, tile=64))
    assert set(whole.sides) == {128} and set(tiled.sides) == {64}
    for a, b in zip(expected.sets["kodak"].rows, result.sets["kodak"].rows, strict=True):
        assert a.psnr == pytest.approx(b.psnr, abs=1e-3)
