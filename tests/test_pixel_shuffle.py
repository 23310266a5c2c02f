"""ssdn.nets.pixel_shuffle: pd_down/pd_up are exact inverse permutations, sub-images are the stride lattices,
and a blind-spot net behind PixelShuffleNet reads only its output pixel's own lattice, never the pixel."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssdn.nets import UNet, mirror_pad
from ssdn.nets.pixel_shuffle import PixelShuffleNet, pd_down, pd_up


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _unet(c: int = 3, k: int = 4) -> UNet:
    net = UNet(c, k)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 10
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return net


class _Record(nn.Module):
    """Returns [x, 2x] on the channel axis (2C output channels) and keeps what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return torch.cat([x, 2 * x], dim=1)


@pytest.mark.parametrize(("s", "h", "w"), [(1, 4, 6), (2, 4, 6), (3, 6, 9), (4, 8, 12), (5, 5, 10)])
def test_pd_round_trip_and_lattices(s: int, h: int, w: int) -> None:
    x = _rand(2, 3, h, w)
    sub = pd_down(x, s)
    assert sub.shape == (2 * s * s, 3, h // s, w // s)
    assert torch.equal(pd_up(sub, s), x)
    assert torch.equal(pd_down(pd_up(sub, s), s), sub)
    for n in range(2):
        for a in range(s):
            for b in range(s):
                assert torch.equal(sub[n * s * s + a * s + b], x[n, :, a::s, b::s])


def test_pd_up_any_channel_count() -> None:
    y = _rand(8, 9, 3, 5)
    x = pd_up(y, 2)
    assert x.shape == (2, 9, 6, 10)
    assert torch.equal(x[1, :, 1::2, 0::2], y[4 + 2])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pd_down(_rand(1, 3, 6, 7), 2), "multiples of stride 2"),
        (lambda: pd_down(_rand(3, 6, 6), 2), r"\(N, C, H, W\)"),
        (lambda: pd_down(_rand(1, 3, 6, 6), 0), "stride must be an integer >= 1"),
        (lambda: pd_down(_rand(1, 3, 6, 6), 2.0), "stride must be an integer >= 1"),
        (lambda: pd_up(_rand(6, 3, 4, 4), 2), r"pd_up needs \(N·4, C, h, w\)"),
        (lambda: PixelShuffleNet(nn.Identity(), -1), "stride must be"),
        (lambda: PixelShuffleNet(nn.Identity(), 4)(_rand(1, 3, 3, 8)), "H, W >= stride 4"),
    ],
)
def test_errors(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


@pytest.mark.parametrize(("s", "h", "w"), [(1, 32, 64), (1, 33, 50), (2, 64, 64), (2, 50, 70), (3, 97, 40)])
def test_wrapper_reassembles_every_channel_and_pads_each_lattice(s: int, h: int, w: int) -> None:
    """Through a recording net: the net gets each lattice mirror-padded on its own to multiples of 32, and the
    output is every channel put back in place, H×W like the input."""
    rec = _Record()
    x = _rand(2, 3, h, w)
    out = PixelShuffleNet(rec, s)(x)
    assert out.shape == (2, 6, h, w)
    assert torch.equal(out[:, :3], x) and torch.equal(out[:, 3:], 2 * x)
    (seen,) = rec.seen
    rows, cols = seen.shape[-2:]
    assert seen.shape[0] == 2 * s * s and rows % 32 == 0 and cols % 32 == 0
    assert rows < math.ceil(h / s) + 32 and cols < math.ceil(w / s) + 32
    for n in range(2):
        for a in range(s):
            for b in range(s):
                lattice = x[n, :, a::s, b::s]
                expected = mirror_pad(lattice, rows - lattice.shape[-2], cols - lattice.shape[-1])
                assert torch.equal(seen[n * s * s + a * s + b], expected)


def test_stride_1_is_the_net() -> None:
    net = _unet()
    x = _rand(2, 3, 64, 96, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(PixelShuffleNet(net, 1)(x), net(x))


def test_stride_is_settable() -> None:
    wrapped = PixelShuffleNet(_Record(), 1)
    wrapped.stride = 3
    assert wrapped.stride == 3
    wrapped(_rand(1, 1, 9, 9))
    assert wrapped.net.seen[-1].shape == (9, 1, 32, 32)  # type: ignore[index]
    with pytest.raises(ValueError, match="stride must be"):
        wrapped.stride = 0
    assert wrapped.stride == 3


@pytest.mark.parametrize(
    ("s", "h", "w", "pixels"),
    [
        (2, 64, 64, [(0, 0), (31, 32), (63, 62), (17, 40)]),  # sub-images need no padding
        # padded by a row or column per sub-image; at pixels that have no mirrored copy (see the module)
        (3, 96, 94, [(2, 4), (50, 3), (95, 13)]),
    ],
)
def test_blind_spot_net_reads_its_own_lattice_only(
    s: int, h: int, w: int, pixels: list[tuple[int, int]]
) -> None:
    """d out(p) / d x: zero at p and off p's lattice (every pixel not ≡ p mod s), non-zero at p ± s."""
    wrapped = PixelShuffleNet(_unet(), s)
    x = _rand(1, 3, h, w, dtype=torch.float32).requires_grad_(True)
    out = wrapped(x)
    assert out.shape == (1, 4, h, w)
    i_all, j_all = torch.arange(h)[:, None], torch.arange(w)[None, :]
    for i, j in pixels:
        (grad,) = torch.autograd.grad(out[0, :, i, j].sum(), x, retain_graph=True)
        reads = grad[0].abs().sum(0) != 0
        own_lattice = ((i_all - i) % s == 0) & ((j_all - j) % s == 0)
        assert not reads[~own_lattice].any(), f"output {(i, j)} reads another sub-image"
        assert not reads[i, j], f"output {(i, j)} reads its own pixel"
        for di, dj in [(-s, 0), (s, 0), (0, -s), (0, s), (s, s)]:
            if 0 <= i + di < h and 0 <= j + dj < w:
                assert reads[i + di, j + dj], f"output {(i, j)} misses its lattice neighbour {(di, dj)}"


def test_lattices_stay_apart_on_padded_borders() -> None:
    """Per-lattice padding: even at the bottom/right edge, where padding is read, no other lattice leaks in."""
    s, h, w = 2, 45, 37
    wrapped = PixelShuffleNet(_unet(), s)
    x = _rand(1, 3, h, w, dtype=torch.float32).requires_grad_(True)
    out = wrapped(x)
    for i, j in [(h - 1, w - 1), (h - 2, w - 1), (h - 1, 0)]:
        (grad,) = torch.autograd.grad(out[0, :, i, j].sum(), x, retain_graph=True)
        reads = grad[0].abs().sum(0) != 0
        own = torch.zeros(h, w, dtype=torch.bool)
        own[i % s :: s, j % s :: s] = True
        assert not reads[~own].any() and reads[own].any()
