"""ssdn.noise: construction/validation, parameter sampling, units, and the corruption processes.

Statistical checks use ≥ 4096 samples per estimate and tolerances of ≥ 4 standard errors (stated per test),
with fixed seeds, so they are deterministic and still fail on a wrong scale, a per-channel draw or clipping.
"""

from __future__ import annotations

import math

import pytest
import torch

from ssdn.noise import NOISE_MODELS, GaussianNoise, ImpulseNoise, NoiseModel, PoissonNoise, build_noise

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- construction and validation


@pytest.mark.parametrize(
    ("name", "cls", "param"),
    [
        ("gaussian", GaussianNoise, "sigma"),
        ("poisson", PoissonNoise, "lambda"),
        ("impulse", ImpulseNoise, "alpha"),
    ],
)
def test_registry_and_names(name: str, cls: type[NoiseModel], param: str) -> None:
    model = build_noise(name, 0.5)
    assert type(model) is cls and cls.name == name and cls.param_name == param
    assert NOISE_MODELS[name] is cls


def test_zero_mean_flag() -> None:
    """Impulse noise pulls E[y | x] towards ½, so L2 on noisy targets needs a different loss (paper §4.3)."""
    assert GaussianNoise.zero_mean and PoissonNoise.zero_mean and not ImpulseNoise.zero_mean


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown noise model 'gauss'.*gaussian, poisson, impulse"):
        build_noise("gauss", 25)


@pytest.mark.parametrize(
    ("name", "value", "pattern"),
    [
        ("gaussian", -1, r"sigma must satisfy sigma >= 0"),
        ("gaussian", math.nan, r"sigma must satisfy"),
        ("gaussian", math.inf, r"sigma must satisfy"),
        ("gaussian", [5, -50], r"sigma must satisfy"),
        ("poisson", 0, r"lambda must satisfy lambda > 0"),
        ("poisson", -30, r"lambda must satisfy"),
        ("impulse", 1.5, r"alpha must satisfy 0 <= alpha <= 1"),
        ("impulse", -0.1, r"alpha must satisfy"),
        ("gaussian", [50, 5], r"sigma range needs low <= high"),
        ("poisson", [1, 2, 3], r"lambda range must be a \[low, high\] pair, got 3"),
        ("impulse", [0.5], r"alpha range must be a \[low, high\] pair, got 1"),
        ("gaussian", "25", r"sigma must be a number or a \[low, high\] pair"),
        ("gaussian", True, r"sigma must be a number or a \[low, high\] pair"),
        ("gaussian", [5, "50"], r"sigma must satisfy"),
    ],
)
def test_validation_errors(name: str, value: object, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        build_noise(name, value)  # type: ignore[arg-type]


def test_domain_edges_accepted() -> None:
    assert GaussianNoise(0).low.item() == 0.0
    assert ImpulseNoise([0, 1]).high.item() == 1.0
    assert PoissonNoise(1e-3).low.item() == 1e-3


@pytest.mark.parametrize("value", [[5, 50], (5, 50), torch.tensor([5.0, 50.0])])
def test_range_forms_and_buffers(value: object) -> None:
    model = GaussianNoise(value)  # type: ignore[arg-type]
    assert model.variable
    assert model.low.dtype == F64 and model.low.item() == 5.0 and model.high.item() == 50.0
    assert dict(model.named_buffers()).keys() == {"low", "high"}
    assert model.state_dict() == {}  # config, not learned state
    assert repr(model) == "GaussianNoise(sigma=[5, 50])"


def test_fixed_repr_and_variable_flag() -> None:
    assert not PoissonNoise(30).variable and repr(PoissonNoise(30)) == "PoissonNoise(lambda=30)"
    assert not ImpulseNoise([0.5, 0.5]).variable
    assert repr(ImpulseNoise(0.5)) == "ImpulseNoise(alpha=0.5)"


# ---------------------------------------------------------------- parameter sampling and units


def test_fixed_params_consume_no_random_numbers() -> None:
    g = gen(0)
    state = g.get_state()
    global_state = torch.random.get_rng_state()
    p = GaussianNoise(25).sample_params(7, generator=g)
    assert torch.equal(g.get_state(), state)
    GaussianNoise(25).sample_params(7)
    assert torch.equal(torch.random.get_rng_state(), global_state)
    assert p.shape == (7,) and p.dtype == F64 and (p == 25).all()


def test_variable_params_uniform_and_seeded() -> None:
    model = PoissonNoise([5, 50])
    p = model.sample_params(20000, generator=gen(1))
    assert p.shape == (20000,) and p.dtype == F64
    assert p.min() >= 5 and p.max() <= 50
    # Uniform on [5, 50]: mean 27.5, std 45/√12 ≈ 13; standard error of the mean ≈ 0.092, tolerance ≈ 5 SE.
    assert abs(p.mean().item() - 27.5) < 0.5
    assert abs(p.std().item() - 45 / math.sqrt(12)) < 0.3
    # One draw per image, in order: exactly low + (high − low)·U.
    assert torch.equal(p, 5 + 45 * torch.rand(20000, generator=gen(1), dtype=F64))
    assert not torch.equal(p, model.sample_params(20000, generator=gen(2)))
    assert model.sample_params(0).shape == (0,)
    with pytest.raises(ValueError, match="n must be"):
        model.sample_params(-1)


@pytest.mark.parametrize(
    ("model", "params", "level"),
    [(GaussianNoise(25), 25.0, 25 / 255), (PoissonNoise(30), 30.0, 1 / 30), (ImpulseNoise(0.3), 0.3, 0.3)],
)
def test_level_units(model: NoiseModel, params: float, level: float) -> None:
    lv = model.to_level(params)
    assert lv.dtype == F64 and lv.item() == pytest.approx(level, rel=1e-15)
    assert model.to_params(lv).item() == pytest.approx(params, rel=1e-15)
    t = torch.tensor([params, 2 * params], dtype=F64)
    torch.testing.assert_close(model.to_params(model.to_level(t)), t, rtol=1e-15, atol=0)


def test_level_of_python_float_has_no_float32_rounding() -> None:
    assert ImpulseNoise(0.3).to_level(0.3).item() == 0.3


# ---------------------------------------------------------------- corruption: reproducibility and draw order


MODELS = [GaussianNoise(25), PoissonNoise(30), ImpulseNoise(0.5)]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_seeded_reproducible_and_dtype_preserved(model: NoiseModel, dtype: torch.dtype) -> None:
    x = torch.rand(2, 3, 16, 16, generator=gen(5), dtype=dtype)
    params = model.sample_params(2)
    y1 = model.corrupt(x, params, generator=gen(7))
    y2 = model.corrupt(x, params, generator=gen(7))
    y3 = model.corrupt(x, params, generator=gen(8))
    assert y1.dtype == dtype and y1.shape == x.shape and y1.device == x.device
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)


def test_gaussian_draw_is_x_plus_scaled_randn() -> None:
    x = torch.rand(2, 3, 8, 8, generator=gen(0))
    params = torch.tensor([10.0, 40.0], dtype=F64)
    y = GaussianNoise([5, 50]).corrupt(x, params, generator=gen(3))
    expected = x + torch.randn(x.shape, generator=gen(3)) * (params / 255).float().view(-1, 1, 1, 1)
    assert torch.equal(y, expected)


def test_poisson_draw_is_poisson_of_lambda_x_over_lambda() -> None:
    x = torch.rand(2, 3, 8, 8, generator=gen(0), dtype=F64)
    params = torch.tensor([5.0, 50.0], dtype=F64)
    y = PoissonNoise([5, 50]).corrupt(x, params, generator=gen(3))
    lam = params.view(-1, 1, 1, 1)
    assert torch.equal(y, torch.poisson(lam * x, generator=gen(3)) / lam)


def test_impulse_draw_order_mask_then_colours() -> None:
    x = torch.rand(2, 3, 8, 8, generator=gen(0))
    params = torch.tensor([0.2, 0.7], dtype=F64)
    y = ImpulseNoise([0, 1]).corrupt(x, params, generator=gen(3))
    g = gen(3)
    mask = torch.rand(2, 1, 8, 8, generator=g) < params.float().view(-1, 1, 1, 1)
    colour = torch.rand(2, 3, 8, 8, generator=g)
    assert torch.equal(y, torch.where(mask, colour, x))


# ---------------------------------------------------------------- corruption: statistics


def test_gaussian_moments_and_no_clipping_or_quantisation() -> None:
    x = torch.full((2, 3, 128, 128), 0.5, dtype=F64)
    y = GaussianNoise(25).corrupt(x, torch.tensor([25.0, 25.0]), generator=gen(11))
    r = y - x
    sigma = 25 / 255
    n = r.numel()  # 98304: SE of the mean σ/√n ≈ 3e-4, relative SE of the variance √(2/n) ≈ 0.45 %
    assert abs(r.mean().item()) < 5 * sigma / math.sqrt(n)
    assert r.var().item() == pytest.approx(sigma**2, rel=0.025)
    edge = torch.stack([torch.zeros(3, 32, 32), torch.ones(3, 32, 32)])
    y_edge = GaussianNoise(50).corrupt(edge, torch.tensor([50.0, 50.0]), generator=gen(12))
    assert y_edge.min() < 0 and y_edge.max() > 1
    assert not torch.equal(y * 255, torch.round(y * 255))


def test_poisson_moments_counts_and_no_clipping() -> None:
    lam, value = 30.0, 0.3
    x = torch.full((2, 3, 128, 128), value, dtype=F64)
    y = PoissonNoise(lam).corrupt(x, torch.tensor([lam, lam]), generator=gen(13))
    counts = y * lam
    torch.testing.assert_close(counts, torch.round(counts), rtol=0, atol=1e-9)
    n = y.numel()
    # Mean x, variance x/λ; the counts have mean 9, var 9, 4th central moment 9·28, so the relative SE of the
    # sample variance is √((252 − 81)/n)/9 ≈ 0.46 %.
    assert abs(y.mean().item() - value) < 5 * math.sqrt(value / lam / n)
    assert y.var().item() == pytest.approx(value / lam, rel=0.025)
    bright = torch.ones(1, 3, 32, 32)
    assert PoissonNoise(5).corrupt(bright, torch.tensor([5.0]), generator=gen(14)).max() > 1


def test_impulse_whole_pixels_uniform_colours() -> None:
    alpha = 0.3
    x = torch.full((2, 3, 128, 128), -1.0, dtype=F64)  # outside [0, 1): every change is a replacement
    y = ImpulseNoise(alpha).corrupt(x, torch.tensor([alpha, alpha]), generator=gen(15))
    changed = y != x
    per_pixel = changed.sum(1)
    assert ((per_pixel == 0) | (per_pixel == 3)).all(), "a pixel must be replaced in all channels or none"
    rate = changed[:, 0].double().mean().item()
    assert abs(rate - alpha) < 5 * math.sqrt(alpha * (1 - alpha) / changed[:, 0].numel())  # SE ≈ 0.0025
    colours = y[changed]
    assert colours.min() >= 0 and colours.max() < 1
    n = colours.numel()  # ≈ 29500: SE of the mean √(1/12/n) ≈ 0.0017
    assert abs(colours.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert colours.var().item() == pytest.approx(1 / 12, rel=0.04)  # relative SE √(0.8/n) ≈ 0.5 %
    # Channels of a replaced pixel are independent, not one grey level.
    rep = y.permute(0, 2, 3, 1)[changed.permute(0, 2, 3, 1).all(-1)]
    assert abs(torch.corrcoef(rep.T)[0, 1].item()) < 0.05


def test_impulse_alpha_limits() -> None:
    x = torch.rand(1, 3, 16, 16, generator=gen(0))
    assert torch.equal(ImpulseNoise(0).corrupt(x, torch.tensor([0.0]), generator=gen(1)), x)
    assert (ImpulseNoise(1).corrupt(x, torch.tensor([1.0]), generator=gen(1)) != x).all()


def _per_image_std(r: torch.Tensor) -> torch.Tensor:
    return r.flatten(1).std(dim=1)


def test_variable_gaussian_params_are_per_image_and_shared_by_channels() -> None:
    model = GaussianNoise([5, 50])
    params = model.sample_params(6, generator=gen(21))
    assert params.unique().numel() == 6
    x = torch.zeros(6, 3, 64, 64, dtype=F64)
    r = model.corrupt(x, params, generator=gen(22))
    # 12288 samples per image: relative SE of a std ≈ 1/√(2n) ≈ 0.64 %; per channel (4096) ≈ 1.1 %.
    torch.testing.assert_close(_per_image_std(r), params / 255, rtol=0.03, atol=0)
    per_channel = r.flatten(2).std(dim=2)
    torch.testing.assert_close(per_channel, (params / 255)[:, None].expand(6, 3), rtol=0.05, atol=0)


def test_variable_poisson_and_impulse_params_are_per_image() -> None:
    lam = torch.tensor([5.0, 20.0, 50.0], dtype=F64)
    x = torch.full((3, 3, 64, 64), 0.5, dtype=F64)
    r = PoissonNoise([5, 50]).corrupt(x, lam, generator=gen(23)) - x
    torch.testing.assert_close(r.flatten(1).var(dim=1), 0.5 / lam, rtol=0.06, atol=0)
    alpha = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    y = ImpulseNoise([0, 1]).corrupt(torch.full_like(x, -1.0), alpha, generator=gen(24))
    torch.testing.assert_close((y[:, 0] != -1).flatten(1).double().mean(1), alpha, rtol=0, atol=0.03)


# ---------------------------------------------------------------- corruption: argument errors


def test_corrupt_argument_errors() -> None:
    model = GaussianNoise(25)
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"params must have shape \(2,\)"):
        model.corrupt(x, torch.tensor([25.0]))
    with pytest.raises(ValueError, match=r"params must have shape \(2,\)"):
        model.corrupt(x, torch.full((2, 3), 25.0))
    with pytest.raises(ValueError, match=r"floating \(N, C, H, W\)"):
        model.corrupt(x[0], torch.tensor([25.0]))
    with pytest.raises(ValueError, match=r"floating \(N, C, H, W\)"):
        model.corrupt(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([25.0, 25.0]))


def test_generator_on_another_device_is_rejected() -> None:
    class CudaLikeGenerator:
        device = torch.device("cuda", 0)

    with pytest.raises(ValueError, match="generator is on cuda"):
        ImpulseNoise(0.5).corrupt(torch.rand(1, 3, 4, 4), torch.tensor([0.5]), generator=CudaLikeGenerator())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="generator is on cuda"):
        GaussianNoise([5, 50]).sample_params(3, generator=CudaLikeGenerator())  # type: ignore[arg-type]
