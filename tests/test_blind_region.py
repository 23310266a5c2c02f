"""UNet.blind_hole: the output at a pixel never reads the (2k-1)² square around it (k = (hole + 1) / 2), reads
the ring just outside it (every ring pixel within 2 of an axis: the whole ring for holes 1 and 3), keeps one-
and two-pass paths equal, traces, and is settable on trained weights.

Dependence is read from autograd: d out(p) / d x is exactly zero wherever out(p) never reads x (structural
zeros stay exact zeros in any precision), and non-zero where it does for these random weights and inputs.
"""

from __future__ import annotations

import math

import pytest
import torch

from ssdn.nets import UNet
from ssdn.nets.unet import MAX_BLIND_HOLE


def _net(hole: int, c: int = 3, k: int = 4, dtype: torch.dtype = torch.float32) -> UNet:
    """Random non-zero weights and biases, so no dependence hides behind a zero."""
    net = UNet(c, k, blind_hole=hole)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 10
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return net.to(dtype)


def _reads(net: UNet, h: int, w: int, pixels: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Per pixel p, the (H, W) map of input pixels (any channel) whose gradient in out(p) is non-zero."""
    dtype = net.nin_c.weight.dtype
    x = torch.rand(1, net.in_channels, h, w, generator=torch.Generator().manual_seed(1), dtype=dtype)
    x.requires_grad_(True)
    out = net(x)
    maps = []
    for i, j in pixels:
        (grad,) = torch.autograd.grad(out[0, :, i, j].sum(), x, retain_graph=True)
        maps.append(grad[0].abs().sum(0) != 0)
    return maps


def _check(hole: int, h: int, w: int, pixels: list[tuple[int, int]] | None = None) -> None:
    k = (hole + 1) // 2
    r = k + 3  # checked: the square, its ring, and 3 pixels beyond it, all inside the image
    pixels = pixels or [(h // 2, w // 2), (r, w - 1 - r), (h - 1 - r, w // 3)]
    for (i, j), reads in zip(pixels, _reads(_net(hole), h, w, pixels), strict=True):
        where = f"hole {hole}, {h}×{w}, output {(i, j)}"
        assert not reads[i - k + 1 : i + k, j - k + 1 : j + k].any(), f"{where} reads inside the square"
        # The ring just outside the square: every pixel within 2 of an axis (the whole ring for holes 1 and 3).
        # Each branch's apex row reads ±2 columns at every position; a ring pixel with |di|, |dj| >= 3 (holes
        # >= 5) is seen only where the pooling grid lets a deeper layer reach it (UNet's docstring).
        ring = [(di, dj) for di in range(-k, k + 1) for dj in range(-k, k + 1) if max(abs(di), abs(dj)) == k]
        for di, dj in ring:
            if min(abs(di), abs(dj)) <= 2:
                assert reads[i + di, j + dj], f"{where} misses ring pixel {(di, dj)}"
        # Nothing beyond the ring goes unread (within 3 pixels of it): the blind region stays inside the ring.
        window = ~reads[i - r : i + r + 1, j - r : j + r + 1]
        window[3:-3, 3:-3] = False
        assert not window.any(), f"{where} misses pixels beyond its ring"


@pytest.mark.parametrize("hole", [1, 3, 5, 7])
@pytest.mark.parametrize(("h", "w"), [(64, 64), (64, 96)])
def test_square_is_blind_and_ring_is_read(hole: int, h: int, w: int) -> None:
    _check(hole, h, w)


@pytest.mark.slow
@pytest.mark.parametrize("hole", list(range(9, MAX_BLIND_HOLE + 1, 2)))
def test_square_is_blind_up_to_the_largest_hole(hole: int) -> None:
    _check(hole, 64, 96)


@pytest.mark.slow
@pytest.mark.parametrize("hole", [5, MAX_BLIND_HOLE])
def test_the_ring_is_read_at_every_place_in_the_pooling_grid(hole: int) -> None:
    """The 32-pixel pooling grid makes reads depend on where a pixel sits: every row and column residue."""
    _check(hole, 96, 96, [(40 + t, 40 + (7 * t) % 32) for t in range(32)])


def test_blind_at_the_borders() -> None:
    """At corners and edges the square is cut by the image: what is left of it stays unread."""
    hole, h, w = 5, 64, 96
    pixels = [(0, 0), (h - 1, w - 1), (1, w // 2)]
    for (i, j), reads in zip(pixels, _reads(_net(hole), h, w, pixels), strict=True):
        assert not reads[max(i - 2, 0) : i + 3, max(j - 2, 0) : j + 3].any(), (i, j)
        assert reads.sum() > 0.9 * h * w  # the rest of the image is read


def test_gradcheck_hole_3() -> None:
    net = _net(3, c=1, k=2, dtype=torch.float64)
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.autograd.gradcheck(net, (x.requires_grad_(True),), fast_mode=True)


def test_hole_is_settable_on_the_same_weights() -> None:
    """The hole is no weight: setting it equals building with it, and the state dict is unchanged."""
    net, built = _net(1, dtype=torch.float64), _net(5, dtype=torch.float64)
    assert net.state_dict().keys() == built.state_dict().keys()
    x = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        one = net(x)
        net.blind_hole = 5
        assert net.blind_hole == 5 and net.blind_shift == 3
        assert torch.equal(net(x), built(x))
        assert not torch.equal(net(x), one)
        net.blind_hole = 1
        assert torch.equal(net(x), one)


@pytest.mark.parametrize("hole", [3, 7])
def test_two_pass_equals_one_pass(hole: int) -> None:
    net = _net(hole, dtype=torch.float64)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        one = net(x)
        net.two_pass = True
        assert torch.equal(net(x), one)


def test_traced_two_pass_takes_any_size() -> None:
    """As ssdn.export traces it: two_pass on, traced at 32², run on other squares and rectangles."""
    net = _net(5).eval()
    net.two_pass = True
    with torch.no_grad():
        traced = torch.jit.trace(net, torch.rand(1, 3, 32, 32), check_trace=False)
        for shape in ((1, 3, 32, 64), (1, 3, 64, 32)):
            x = torch.rand(shape, generator=torch.Generator().manual_seed(5))
            assert torch.equal(traced(x), net(x))


@pytest.mark.parametrize("hole", [0, 2, -1, 4, MAX_BLIND_HOLE + 2, True, 3.0])
def test_bad_hole_raises(hole: object) -> None:
    with pytest.raises(ValueError, match="blind_hole"):
        UNet(blind_hole=hole)  # type: ignore[arg-type]
    net = UNet()
    with pytest.raises(ValueError, match="blind_hole"):
        net.blind_hole = hole  # type: ignore[assignment]
    assert net.blind_hole == 1  # a refused value leaves the net as it was


def test_baseline_has_no_hole() -> None:
    assert UNet(blindspot=False).blind_hole == 1
    with pytest.raises(ValueError, match=r"blind_hole=3 needs the blind-spot net"):
        UNet(blindspot=False, blind_hole=3)
