"""ssdn.nets: U-Net shapes, parameters, init, errors, blind-spot receptive field, mixed precision, estimators.

Receptive-field tests put NaN into the input: NaN survives every op of the net (conv sums, max pooling,
leaky ReLU, copies), so an output is finite exactly when its computation never read a NaN input: exact in
any precision, and one pass answers for every output pixel at once. (CPU convs compute each output from its
own window; an algorithm that mixed windows, like FFT, could only add NaNs and fail these tests, never pass
them wrongly.) Tests that need "the output changes" perturb the input in float64 instead.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ssdn.nets.unet as unet_module
from ssdn.nets import GlobalNoiseLevel, NoiseEstimator, UNet, level_from_raw
from ssdn.nets.reference import table4_forward

NAN = float("nan")


def _randomise(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random non-zero weights and biases (the authors' init has zero biases, which could hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 10
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return net


def _net(blindspot: bool = True, c: int = 3, k: int = 9, dtype: torch.dtype = torch.float64) -> UNet:
    return _randomise(UNet(c, k, blindspot=blindspot)).to(dtype)


def _input(n: int, c: int, h: int, seed: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, h, generator=g, dtype=torch.float64).to(dtype)


# --------------------------------------------------------------------------------------------------
# Reference: the paper's description taken literally (ssdn.nets.reference), with the net's weights.


@pytest.mark.parametrize("blindspot", [True, False])
@pytest.mark.parametrize("c", [3, 1])
def test_matches_paper_literal_network(blindspot: bool, c: int) -> None:
    """Same outputs and same weight gradients (the transposed-conv decoder must train like the paper's)."""
    net = _net(blindspot, c, 5)
    with torch.no_grad():
        x = _input(1, c, 64)
        torch.testing.assert_close(net(x), table4_forward(net, x), rtol=1e-10, atol=1e-10)
        for shape in ((1, c, 32, 96), (2, c, 64, 32)):  # non-square: the two-pass path against the paper's
            x = torch.rand(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
            torch.testing.assert_close(net(x), table4_forward(net, x), rtol=1e-10, atol=1e-10)
    x, proj = _input(1, c, 32), _input(1, 5, 32, seed=2)
    out, ref = net(x), table4_forward(net, x)
    grads = torch.autograd.grad((out * proj).sum(), list(net.parameters()))
    ref_grads = torch.autograd.grad((ref * proj).sum(), list(net.parameters()))
    for (name, _), g, r in zip(net.named_parameters(), grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9 * r.abs().max().item(), msg=name)


@pytest.mark.parametrize("hole", [3, 5])
def test_matches_paper_literal_network_with_a_hole(hole: int) -> None:
    """The hole (SHIFT by (hole + 1) / 2 rows) against the reference's repeated one-row SHIFT, one and two pass."""
    net = _net(k=5)
    net.blind_hole = hole
    with torch.no_grad():
        for shape in ((1, 3, 32, 32), (1, 3, 32, 64)):
            x = torch.rand(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
            out = net(x)
            torch.testing.assert_close(out, table4_forward(net, x), rtol=1e-10, atol=1e-10)
        net.blind_hole = 1  # the reference's own argument overrides the net's hole
        torch.testing.assert_close(table4_forward(net, x, blind_hole=hole), out, rtol=1e-10, atol=1e-10)
        assert (table4_forward(net, x) - out).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_default_hole_is_the_papers_shift_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    """blind_hole=1 (the default) runs the one-row SHIFT the net had before holes existed: outputs and input
    gradients equal bit for bit to the net with that SHIFT put back, on both paths."""
    net = _net(dtype=dtype)
    assert net.blind_hole == 1
    xs = [
        torch.rand(s, generator=torch.Generator().manual_seed(6), dtype=dtype)
        for s in ((2, 3, 32, 32), (1, 3, 32, 64))
    ]

    def run() -> list[torch.Tensor]:
        outs = []
        for x in xs:
            x = x.clone().requires_grad_(True)
            out = net(x)
            outs += [out.detach(), *torch.autograd.grad(out.square().sum(), x)]
        return outs

    now = run()
    monkeypatch.setattr(unet_module, "_shift_down", lambda h, rows: F.pad(h, (0, 0, 1, -1)))
    for a, b in zip(now, run(), strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# Shapes, parameters, init, errors


@pytest.mark.parametrize("blindspot", [True, False])
@pytest.mark.parametrize(("c", "k"), [(3, 9), (3, 3), (1, 2), (1, 1)])
def test_output_shape(blindspot: bool, c: int, k: int) -> None:
    net = UNet(c, k, blindspot=blindspot)
    with torch.no_grad():
        assert net(torch.rand(2, c, 32, 32)).shape == (2, k, 32, 32)
        assert net(torch.rand(1, c, 64, 64)).shape == (1, k, 64, 64)


def test_baseline_accepts_non_square() -> None:
    with torch.no_grad():
        assert UNet(blindspot=False)(torch.rand(1, 3, 32, 96)).shape == (1, 9, 32, 96)


def _table4_parameter_count(c: int, k: int, blindspot: bool) -> int:
    """Parameters from Table 4's widths, independently of the implementation."""
    convs3 = (
        [(c, 48)]
        + [(48, 48)] * 6
        + [(96, 96), (96, 96)]
        + [(144, 96), (96, 96)] * 3
        + [(96 + c, 96), (96, 96)]
    )
    head = 384 if blindspot else 96
    convs1 = [(head, head), (head, 96), (96, k)]
    return sum(9 * i * o + o for i, o in convs3) + sum(i * o + o for i, o in convs1)


@pytest.mark.parametrize(
    ("c", "k", "blindspot", "expected"),
    [(3, 9, True, 1_269_129), (3, 9, False, 1_102_953), (3, 1, False, 1_102_177), (1, 2, True, 1_265_858)],
)
def test_parameter_count(c: int, k: int, blindspot: bool, expected: int) -> None:
    assert _table4_parameter_count(c, k, blindspot) == expected
    assert sum(p.numel() for p in UNet(c, k, blindspot=blindspot).parameters()) == expected


def test_layer_names_and_shapes_follow_the_authors() -> None:
    shapes = {name: tuple(p.shape) for name, p in UNet(3, 9).named_parameters()}
    names = [f"enc_conv{i}" for i in range(7)]
    names += [f"dec_conv{i}{ab}" for i in (5, 4, 3, 2, 1) for ab in "ab"] + ["nin_a", "nin_b", "nin_c"]
    assert list(shapes) == [f"{n}.{p}" for n in names for p in ("weight", "bias")]
    assert shapes["dec_conv5a.weight"] == (96, 96, 3, 3)
    assert shapes["dec_conv4a.weight"] == (96, 144, 3, 3)
    assert shapes["dec_conv1a.weight"] == (96, 99, 3, 3)
    assert shapes["nin_a.weight"] == (384, 384, 1, 1)
    assert shapes["nin_c.weight"] == (9, 96, 1, 1)


def test_init_statistics() -> None:
    torch.manual_seed(0)
    net = UNet(3, 9)
    for name, p in net.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
            continue
        fan_in = p[0].numel()
        gain = 1.0 if name.startswith("nin_c") else math.sqrt(2.0)
        # std of n samples has relative standard error ~ 1/sqrt(2n); allow 5 of them.
        tol = 5 / math.sqrt(2 * p.numel())
        assert p.std().item() == pytest.approx(gain / math.sqrt(fan_in), rel=tol), name
        assert abs(p.mean().item()) < 5 * gain / math.sqrt(fan_in * p.numel()), name


def test_zero_last_gives_zero_output() -> None:
    net = UNet(3, 4, blindspot=True, zero_last=True)
    assert torch.count_nonzero(net.nin_c.weight) == 0 and torch.count_nonzero(net.nin_c.bias) == 0
    assert torch.count_nonzero(net.nin_b.weight) > 0
    with torch.no_grad():
        assert torch.equal(net(torch.rand(1, 3, 32, 32)), torch.zeros(1, 4, 32, 32))


@pytest.mark.parametrize(
    ("blindspot", "shape", "match"),
    [
        (True, (1, 3, 32, 48), "blind-spot UNet needs H and W to be positive multiples of 32"),
        (True, (1, 3, 48, 48), "multiples of 32"),
        (True, (1, 3, 40, 64), r"multiples of 32 .*got 40×64"),
        (True, (1, 3, 0, 0), "multiples of 32"),
        (False, (1, 3, 32, 48), "multiples of 32"),
        (False, (1, 3, 40, 32), "multiples of 32"),
        (True, (1, 1, 32, 32), r"\(N, 3, H, W\)"),
        (False, (3, 32, 32), r"\(N, 3, H, W\)"),
    ],
)
def test_bad_input_sizes_raise(blindspot: bool, shape: tuple[int, ...], match: str) -> None:
    net = UNet(3, 9, blindspot=blindspot)
    with pytest.raises(ValueError, match=match) as err:
        net(torch.rand(shape))
    if len(shape) == 4 and shape[1] == 3:
        assert "ssdn.nets.padding" in str(err.value)


# --------------------------------------------------------------------------------------------------
# Blind spot, exhaustively. The net is NIN(concat_k rot^-k(T(rot^k x))) with one trunk T (ending in SHIFT)
# and 1×1 layers NIN, so "out(p) never reads x(p) but reads its 8 neighbours", for every p, follows from
#   (a) T's output row i never reads input rows >= i (any column; every row is checked);
#   (b) T's output (i, j) reads (i-1, j-1), (i-1, j), (i-1, j+1) (every pixel is checked);
#   (c) the net is wired as that formula says (checked to float64 precision);
# since rotation k maps "rows >= i" to a half-plane through p facing side k, and the "row above" neighbours
# of the four sides are the 8 neighbours. End-to-end NaN checks at corners, edges and centre back this up.


@pytest.mark.parametrize("size", [64, pytest.param(96, marks=pytest.mark.slow)])
def test_trunk_never_reads_its_own_row_or_below(size: int) -> None:
    net = _net(dtype=torch.float32)
    x = _input(size, 3, size, dtype=torch.float32)
    rows = torch.arange(size)
    x[rows, :, rows, :] = NAN  # image r has a NaN row r (all columns and channels)
    with torch.no_grad():
        read = torch.cat([net.trunk(chunk) for chunk in x.split(16)]).isnan().any(dim=1)  # (r, i, j)
    r, i = torch.arange(size)[:, None], torch.arange(size)[None, :]
    assert not read[i <= r].any(), "a trunk output row read an input row at or below it"
    # ...while the next row down reads all of it: a leak would show.
    assert read[r[:-1, 0], r[:-1, 0] + 1].all()


@pytest.mark.parametrize("size", [64, pytest.param(96, marks=pytest.mark.slow)])
def test_trunk_reads_the_three_pixels_above(size: int) -> None:
    """With the upsampled half of dec_conv1a zeroed the trunk output at (i, j) can only read its input
    through the raw-input skip: rows i-5..i-1, columns j-2..j+2. Perturbing a lattice with step 5 (one point
    per such window) in 25 phases shows, in float64, exactly which pixels each output changes with."""
    net = _net()
    with torch.no_grad():
        net.dec_conv1a.weight[:, :96] = 0
    x = _input(1, 3, size)
    lattices = torch.zeros(26, 1, size, size, dtype=torch.float64)  # the first one stays unperturbed
    for phase in range(25):
        lattices[phase + 1, 0, phase // 5 :: 5, phase % 5 :: 5] = 1
    with torch.no_grad():
        out = net.trunk(x + 0.5 * lattices)
    changed, lattices = (out[1:] != out[0]).any(dim=1), lattices[1:]
    window = torch.ones(1, 1, 5, 5, dtype=torch.float64)
    expected = F.conv2d(F.pad(lattices, (2, 2, 5, 0)), window)[:, 0, :size] > 0
    assert torch.equal(changed, expected)
    # Every pixel's three upper neighbours are inside its window, so each of them changed the output.
    i, j = torch.meshgrid(torch.arange(1, size), torch.arange(size), indexing="ij")
    for dj in (-1, 0, 1):
        inside = (j + dj >= 0) & (j + dj < size)
        phase = ((i - 1) % 5) * 5 + (j + dj) % 5
        assert changed[phase[inside], i[inside], j[inside]].all()


def test_features_are_four_rotated_trunks() -> None:
    net, x = _net(), _input(2, 3, 32)
    with torch.no_grad():
        expected = torch.cat(
            [torch.rot90(net.trunk(torch.rot90(x, k, (2, 3))), -k, (2, 3)) for k in range(4)], 1
        )
        torch.testing.assert_close(net.features(x), expected, rtol=1e-12, atol=1e-12)
        h = F.leaky_relu(net.nin_b(F.leaky_relu(net.nin_a(expected), 0.1)), 0.1)
        torch.testing.assert_close(net(x), net.nin_c(h), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_two_pass_equals_one_pass_on_a_square(dtype: torch.dtype) -> None:
    """The non-square path ([0°, 180°] and [90°, 270°] as two batches), forced on a square input, gives the
    one-pass output: bit for bit on this CPU (same convs per image; 1e-6 allowed in float32 for backends that
    pick another conv algorithm by batch size)."""
    net, x = _net(dtype=dtype), _input(3, 3, 64, dtype=dtype)
    with torch.no_grad():
        one = net(x)
        net.two_pass = True
        two = net(x)
    tol = 0.0 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(two, one, rtol=tol, atol=tol)


@pytest.mark.parametrize(("h", "w"), [(32, 64), (64, 32), (32, 160), (96, 64)])
def test_blindspot_on_rectangles(h: int, w: int) -> None:
    """d out(p) / d x: zero at p (every channel), non-zero at each of its 8 neighbours, for pixels inside and
    on the border of non-square inputs of several aspect ratios."""
    net = _net()
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x.requires_grad_(True)
    out = net(x)
    for i, j in [(h // 2, w // 2), (h // 3, w - 2), (1, 1), (h - 1, w // 2)]:
        (grad,) = torch.autograd.grad(out[0, :, i, j].sum(), x, retain_graph=True)
        reads = grad[0].abs().sum(0) != 0
        assert not reads[i, j], f"{h}×{w}: output {(i, j)} depends on its own input pixel"
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                if (di or dj) and 0 <= i + di < h and 0 <= j + dj < w:
                    assert reads[i + di, j + dj], f"{h}×{w}: output {(i, j)} misses neighbour {(di, dj)}"


PROBES_64 = [(0, 0), (0, 63), (63, 0), (63, 63), (0, 31), (31, 0), (63, 32), (32, 63), (31, 32), (1, 62)]


def _nan_probe(net: UNet, size: int, probes: list[tuple[int, int]]) -> torch.Tensor:
    """(probe, i, j): whether output (i, j) read the input pixel of that probe (NaN in all its channels)."""
    x = _input(len(probes), net.in_channels, size, dtype=net.nin_c.weight.dtype)
    for b, (i, j) in enumerate(probes):
        x[b, :, i, j] = NAN
    with torch.no_grad():
        return net(x).isnan().any(dim=1)


def test_blindspot_end_to_end_at_corners_edges_centre() -> None:
    read = _nan_probe(_net(dtype=torch.float32), 64, PROBES_64)
    for b, (i, j) in enumerate(PROBES_64):
        assert not read[b, i, j], f"output {(i, j)} read its own input pixel"
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                if (di or dj) and 0 <= i + di < 64 and 0 <= j + dj < 64:
                    assert read[b, i + di, j + dj], f"output {(i + di, j + dj)} missed its neighbour {(i, j)}"


def test_removing_the_final_shift_leaks_the_centre(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unet_module, "_shift_down", lambda h, rows: h)
    read = _nan_probe(_net(dtype=torch.float32), 32, [(0, 0), (16, 16), (31, 5)])
    assert read[0, 0, 0] and read[1, 16, 16] and read[2, 31, 5]


def test_baseline_reads_the_centre() -> None:
    read = _nan_probe(_net(blindspot=False, dtype=torch.float32), 32, [(0, 0), (16, 16), (31, 5)])
    assert read[0, 0, 0] and read[1, 16, 16] and read[2, 31, 5]


@pytest.mark.parametrize("blindspot", [True, False])
def test_receptive_field_reaches_30_pixels_each_way(blindspot: bool) -> None:
    net, x = _net(blindspot), _input(1, 3, 64)
    sources = [(2, 32), (62, 32), (32, 2), (32, 62)]
    xs = x.repeat(len(sources) + 1, 1, 1, 1)
    for b, (i, j) in enumerate(sources, start=1):
        xs[b, :, i, j] += 0.5
    with torch.no_grad():
        out = net(xs)[:, :, 32, 32]
    assert (out[1:] != out[0]).any(dim=1).all()


# --------------------------------------------------------------------------------------------------
# Mixed precision, memory format, devices


@pytest.mark.parametrize("blindspot", [True, False])
def test_channels_last_bf16_autocast(blindspot: bool) -> None:
    net = _randomise(UNet(3, 9, blindspot=blindspot))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = net(x)
    net = net.to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(xc)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).norm() <= 0.05 * ref.norm()
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.gpu
@pytest.mark.parametrize("blindspot", [True, False])
def test_cuda_matches_cpu(blindspot: bool) -> None:
    """fp32 (TF32 allowed) and bf16 autocast + channels_last on CUDA against fp32 on the CPU."""
    net = _randomise(UNet(3, 9, blindspot=blindspot))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = net(x)
        net = net.cuda().to(memory_format=torch.channels_last)
        xc = x.cuda().contiguous(memory_format=torch.channels_last)
        assert (net(xc).cpu() - ref).norm() <= 1e-2 * ref.norm()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = net(xc)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert (out.float().cpu() - ref).norm() <= 0.05 * ref.norm()


@pytest.mark.gpu
def test_cuda_blind_spot() -> None:
    """NaN probes on CUDA, with cuDNN off: its FFT/Winograd algorithms would smear a NaN over whole tiles."""
    net = _net().cuda()
    x = _input(2, 3, 64).cuda()
    x[0, :, 20, 41] = NAN
    x[1, :, 63, 0] = NAN
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=False):
        read = net(x).isnan().any(dim=1).cpu()
    assert not read[0, 20, 41] and read[0, 19:22, 40:43].sum() == 8
    assert not read[1, 63, 0] and read[1, 62:64, 0:2].sum() == 3


# --------------------------------------------------------------------------------------------------
# Noise-level estimators

LEVEL0 = (F.softplus(torch.tensor(-4.0, dtype=torch.float64)) + 1e-3).item()


def test_level_from_raw() -> None:
    raw = torch.tensor([0.0, -100.0, 4.0, 50.0])
    level = level_from_raw(raw)
    assert level.dtype == torch.float64
    torch.testing.assert_close(
        level, torch.tensor([LEVEL0, 1e-3, math.log(2.0) + 1e-3, 46.001], dtype=torch.float64)
    )
    assert LEVEL0 == pytest.approx(math.log1p(math.exp(-4.0)) + 1e-3, rel=1e-15, abs=0)
    assert LEVEL0 == pytest.approx(0.019149, abs=1e-6) and LEVEL0 * 255 == pytest.approx(4.883, abs=1e-3)


@pytest.mark.parametrize("c", [3, 1])
def test_noise_estimator_starts_at_level0_and_learns(c: int) -> None:
    est = NoiseEstimator(c)
    assert not est.net.blindspot and est.net.out_channels == 1
    y = torch.rand(3, c, 32, 64)
    level = est(y)
    assert level.shape == (3,) and level.dtype == torch.float64
    assert torch.equal(level, torch.full((3,), LEVEL0, dtype=torch.float64))
    level.sum().backward()
    assert est.net.nin_c.weight.grad.abs().sum() > 0 and est.net.nin_c.bias.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="multiples of 32"):
        est(torch.rand(1, c, 30, 32))


def test_global_noise_level_trains() -> None:
    glob = GlobalNoiseLevel()
    assert [n for n, _ in glob.named_parameters()] == ["raw"] and glob.raw.item() == 0.0
    level = glob(torch.zeros(5, 3, 8, 8))
    assert level.shape == (5,) and level.dtype == torch.float64
    assert torch.equal(level, torch.full((5,), LEVEL0, dtype=torch.float64))
    opt = torch.optim.Adam(glob.parameters(), lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        (glob(torch.zeros(2, 1, 1, 1)) - 25 / 255).square().sum().backward()
        opt.step()
    assert glob(torch.zeros(1, 1, 1, 1)).item() == pytest.approx(25 / 255, rel=1e-2)
