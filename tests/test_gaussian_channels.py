"""Channel-correlated Gaussian noise (``noise=gaussian_channels``): Σ_n = diag(s²) + t²·𝟙𝟙ᵀ, its maths against
independent references and the Gaussian model it contains, its corruption and classical estimate, and a run.

Statistical checks use ≥ 1e5 samples and tolerances of ≥ 4 standard errors, with fixed seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.distributions import MultivariateNormal

from ssdn.config.compose import ConfigError, noise_tag, validate_config
from ssdn.config.run import RunConfig
from ssdn.data.crops import ESTIMATION_IMAGES
from ssdn.data.datamodule import DenoisingDataModule
from ssdn.denoise import main as denoise_main
from ssdn.methods.levels import build_level_source, initialise_from_data
from ssdn.methods.prior import split_prior
from ssdn.noise import GaussianChannelsNoise, GaussianNoise, NoiseParamError, build_noise
from ssdn.noise.gaussian_channels import params_from_channel_cov
from ssdn.train import run
from ssdn.training.checkpoints import read_checkpoint
from ssdn.training.initial_level import initialise_level
from ssdn.training.module import DenoiserModule
from tests.conftest import compose_config
from tests.test_correlation import smooth_image
from tests.test_noisy_only import noisy_overrides, write_set
from tests.test_posterior import make_raw, reference_eq6, reference_posterior_cov, ridge_tolerance

F64 = torch.float64
CAMERA = {"sigma_r": 10.6, "sigma_g": 6.2, "sigma_b": 11.1, "sigma_common": 12.6}
"""Near the simulated camera's measured Σ_n (s² ≈ 112, 39, 123; t² ≈ 160; 8-bit units²)."""


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noise_cov(level: torch.Tensor) -> torch.Tensor:
    """Σ_n built entry by entry from a level (..., 4) (no floor binds in these cases)."""
    s, t = level[..., :3], level[..., 3]
    cov = torch.zeros((*level.shape[:-1], 3, 3), dtype=F64)
    for i in range(3):
        for k in range(3):
            cov[..., i, k] = t**2 + (s[..., i] ** 2 if i == k else 0.0)
    return cov


def case(seed: int, n: int = 3, size: int = 4):
    model = GaussianChannelsNoise(
        {"sigma_r": [5, 30], "sigma_g": [5, 30], "sigma_b": [5, 30], "sigma_common": [0, 30]}
    )
    mu, cov = split_prior(make_raw(n, 3, size, seed), "full", 3)
    level = model.pixel_level(model.to_level(model.sample_params(n, generator=gen(seed + 1))))
    y = mu + 0.1 * torch.randn(mu.shape, generator=gen(seed + 2), dtype=F64)
    return model, y, mu, cov, level


# ---------------------------------------------------------------- construction, parameters, config


def test_registry_params_units_and_format() -> None:
    model = build_noise("gaussian_channels", {**CAMERA, "sigma_common": [5, 20]})
    assert type(model) is GaussianChannelsNoise and model.num_params == 4
    assert model.param_names == ("sigma_r", "sigma_g", "sigma_b", "sigma_common")
    assert model.low.tolist() == [10.6, 6.2, 11.1, 5.0] and model.high.tolist()[3] == 20.0 and model.variable
    params = torch.tensor([[10.0, 20.0, 30.0, 5.0]], dtype=F64)
    assert torch.equal(model.to_level(params), params / 255)
    torch.testing.assert_close(model.to_params(model.to_level(params)), params, rtol=1e-15, atol=0)
    assert model.format_params(params[0]) == "sigma_r=10 sigma_g=20 sigma_b=30 sigma_common=5"
    assert model.pixel_level(model.to_level(params)).shape == (1, 1, 1, 4)
    with pytest.raises(ValueError, match=r"sigma_common must satisfy every sigma >= 0"):
        build_noise("gaussian_channels", {**CAMERA, "sigma_common": -1})
    with pytest.raises(
        ValueError, match=r"needs exactly the keys \{sigma_r, sigma_g, sigma_b, sigma_common\}"
    ):
        build_noise("gaussian_channels", {"sigma_r": 1, "sigma_g": 1, "sigma_b": 1})
    with pytest.raises(NoiseParamError, match=r"--param needs 4 value\(s\) for gaussian_channels noise"):
        model.check_params([10.0, 10.0])
    with pytest.raises(NoiseParamError, match=r"--param: gaussian_channels noise needs sigma_g to satisfy"):
        model.check_params([10.0, math.nan, 10.0, 1.0])


def test_noise_cov_is_diag_plus_common_exactly() -> None:
    model, _, mu, cov, level = case(seed=1)
    _, cov_y = model.marginal(mu, cov, level)
    torch.testing.assert_close(cov_y, cov + noise_cov(level), rtol=0, atol=0)
    # Each channel std is floored at 1e-3 as the Gaussian σ (Σ_n stays positive definite); t is not.
    zero = torch.tensor([0.0, 0.0, 0.0, 0.0], dtype=F64)
    torch.testing.assert_close(model._noise_cov(mu, zero), 1e-6 * torch.eye(3, dtype=F64), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"needs RGB pixels \(\.\.\., 3\), got 1"):
        model.nll(mu[..., :1], mu[..., :1], cov[..., :1, :1], level)


def test_config_composes_learns_four_params_and_refuses_mono() -> None:
    cfg = compose_config("noise=gaussian_channels", "noise_params=sigma_global")
    validate_config(cfg)
    assert cfg.run.name == "gch_sigma_r10_sigma_g10_sigma_b10_sigma_common10-blindspot-sigma_global"
    assert noise_tag("gaussian_channels", {**CAMERA, "sigma_common": [0, 30]}).endswith("sigma_common0_30")
    with pytest.raises(ConfigError) as err:
        validate_config(compose_config("noise=gaussian_channels", "channels=1"))
    lines = [line for line in str(err.value).splitlines() if "gaussian_channels" in line]
    assert len(lines) == 1 and lines[0].strip().endswith("use noise=gaussian")
    assert "channels=1" in lines[0]


# ---------------------------------------------------------------- maths against references


def test_nll_equals_multivariate_normal_log_prob() -> None:
    model, y, mu, cov, level = case(seed=10)
    ref = -MultivariateNormal(mu, cov + noise_cov(level)).log_prob(y) - 1.5 * math.log(2 * math.pi)
    nll = model.nll(y, mu, cov, level)
    assert nll.shape == mu.shape[:-1] and nll.dtype == F64
    torch.testing.assert_close(nll, ref, rtol=1e-10, atol=1e-12)


def test_posterior_mean_and_std_against_closed_forms() -> None:
    model, y, mu, cov, level = case(seed=20)
    cov_n = noise_cov(level)
    pme = model.posterior_mean(y, mu, cov, level)
    # The authors' ε ridges reproduced: agreement to round-off.
    torch.testing.assert_close(pme, reference_eq6(y, mu, cov, cov_n, 1e-6), rtol=1e-10, atol=1e-12)
    # The closed form μ + Σ_x(Σ_x + Σ_n)⁻¹(y − μ), no ridge: within the ridges' analytic effect.
    gain = cov @ torch.linalg.inv(cov + cov_n)
    closed = mu + (gain @ (y - mu)[..., None]).squeeze(-1)
    err = (pme - closed).norm(dim=-1)
    assert (err <= ridge_tolerance(y, mu, cov, cov_n)).all() and err.max() > 0
    post = reference_posterior_cov(cov, cov_n, 1e-6)
    std = model.posterior_std(y, mu, cov, level)
    torch.testing.assert_close(std, torch.diagonal(post, dim1=-2, dim2=-1).sqrt(), rtol=3e-8, atol=0)


def test_common_noise_is_not_kept_as_signal() -> None:
    """A flat prior guess off by a grey shift: with the common component the posterior attributes the shared
    part of y − μ to noise, so the estimate moves less towards y than under σ²·I of the same total variance."""
    model = GaussianChannelsNoise(CAMERA)
    level = model.to_level(torch.tensor(list(CAMERA.values()), dtype=F64))
    mu = torch.full((1, 3), 0.5, dtype=F64)
    cov = (10 / 255) ** 2 * torch.eye(3, dtype=F64)[None]
    y = mu + 20 / 255
    sigma = (model._noise_cov(mu, level).diagonal().mean()).sqrt()
    shift_c = model.posterior_mean(y, mu, cov, level) - mu
    shift_g = GaussianNoise(25).posterior_mean(y, mu, cov, sigma) - mu
    assert (shift_c < shift_g).all()


def test_t0_equal_s_is_the_gaussian_model() -> None:
    _, y, mu, cov, _ = case(seed=30)
    n = mu.shape[0]
    sigma = torch.tensor([0.0, 2.0, 25.0], dtype=F64).view(n, 1, 1) / 255  # 0: both floor the std at 1e-3
    level = torch.stack([sigma, sigma, sigma, torch.zeros_like(sigma)], dim=-1)
    gauss, model = GaussianNoise(25), GaussianChannelsNoise(CAMERA)
    for fn in ("nll", "posterior_mean", "posterior_std"):
        assert torch.equal(getattr(model, fn)(y, mu, cov, level), getattr(gauss, fn)(y, mu, cov, sigma)), fn
    assert torch.equal(model.marginal(mu, cov, level)[1], gauss.marginal(mu, cov, sigma)[1])
    assert torch.equal(model.regulariser(mu, level), gauss.regulariser(mu, sigma))
    many = torch.rand(1000, generator=gen(31), dtype=F64) * 0.3  # exact for every σ, not by luck
    stacked = torch.stack([many, many, many, torch.zeros_like(many)], dim=-1)
    assert torch.equal(
        model.regulariser(mu[:1, 0, 0].expand(1000, 3), stacked),
        gauss.regulariser(mu[:1, 0, 0].expand(1000, 3), many),
    )


def test_regulariser_is_minus_w_root_mean_trace() -> None:
    model, _, mu, _, level = case(seed=40)
    expected = -0.1 * (torch.diagonal(noise_cov(level), dim1=-2, dim2=-1).mean(-1)).sqrt()
    reg = model.regulariser(mu, level)
    assert reg.shape == mu.shape[:-1]
    torch.testing.assert_close(reg, expected.expand_as(reg), rtol=1e-15, atol=0)


def test_gradcheck_nll_and_regulariser_wrt_raw_and_level() -> None:
    model, _, _, _, _ = case(seed=50)
    raw = make_raw(2, 3, 2, seed=50).requires_grad_()
    level = model.pixel_level(model.to_level(model.sample_params(2, generator=gen(51)))).requires_grad_()
    y = raw.detach()[:, :3].permute(0, 2, 3, 1) + 0.1 * torch.randn(2, 2, 2, 3, generator=gen(52), dtype=F64)

    def loss(raw: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        mu, cov = split_prior(raw, "full", 3)
        return model.nll(y, mu, cov, level) + model.regulariser(mu, level)

    assert torch.autograd.gradcheck(loss, (raw, level))
    loss(raw, level).sum().backward()
    assert level.grad is not None and (level.grad != 0).all()


# ---------------------------------------------------------------- corruption


def test_corrupt_sample_covariance_matches_noise_cov() -> None:
    """1.8e5 pixels: the SE of a covariance entry is √((Σ_ii·Σ_kk + Σ_ik²)/n) ≤ 1 (8-bit units²); 5 SE allowed."""
    model = GaussianChannelsNoise(CAMERA)
    x = torch.full((2, 3, 300, 300), 0.5, dtype=F64)
    y = model.corrupt(x, model.sample_params(2), gen(60))
    assert y.shape == x.shape and y.dtype == F64
    e = ((y - x) * 255).permute(1, 0, 2, 3).reshape(3, -1)
    sample = e @ e.T / e.shape[1]
    truth = noise_cov(model.to_level(model.low)) * 255**2
    assert (e.mean(1).abs() < 5 * truth.diagonal().sqrt() / math.sqrt(e.shape[1])).all()
    se = ((truth.diagonal()[:, None] * truth.diagonal()[None] + truth**2) / e.shape[1]).sqrt()
    assert ((sample - truth).abs() < 5 * se).all(), (sample, truth)
    dark = model.corrupt(torch.zeros(1, 3, 8, 8), model.sample_params(1), gen(61))
    assert dark.min() < 0  # never clipped


def test_corrupt_is_reproducible_and_t0_draws_the_gaussian_noise() -> None:
    model = GaussianChannelsNoise(CAMERA)
    x = torch.rand(2, 3, 16, 16, generator=gen(70))
    params = model.sample_params(2)
    a = model.corrupt(x, params, gen(71))
    assert torch.equal(a, model.corrupt(x, params, gen(71)))
    assert not torch.equal(a, model.corrupt(x, params, gen(72)))
    same = torch.tensor([[25.0, 25.0, 25.0, 0.0]] * 2, dtype=F64)
    gauss = GaussianNoise(25).corrupt(x, torch.tensor([25.0, 25.0]), gen(73))
    assert torch.equal(model.corrupt(x, same, gen(73)), gauss)
    with pytest.raises(ValueError, match=r"RGB images \(N, 3, H, W\), got 1"):
        model.corrupt(x[:, :1], params, gen(74))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_draw_order_own_then_common(dtype: torch.dtype) -> None:
    x = torch.rand(2, 3, 8, 8, generator=gen(75), dtype=dtype)
    params = torch.tensor([[10.0, 20.0, 30.0, 5.0], [1.0, 2.0, 3.0, 40.0]], dtype=F64)
    y = GaussianChannelsNoise(CAMERA).corrupt(x, params, gen(76))
    g = gen(76)
    own = torch.randn(x.shape, generator=g, dtype=dtype)
    common = torch.randn(2, 1, 8, 8, generator=g, dtype=dtype)
    scale = (params / 255).to(dtype)
    expected = x + own * scale[:, :3, None, None] + common * scale[:, 3:, None, None]
    assert y.dtype == dtype and torch.equal(y, expected)


# ---------------------------------------------------------------- classical estimate and learned start


def test_params_from_channel_cov() -> None:
    cov = torch.tensor([[273.0, 164.0, 153.0], [164.0, 199.0, 167.0], [153.0, 167.0, 284.0]], dtype=F64)
    t2 = (164.0 + 153.0 + 167.0) / 3
    expected = torch.tensor([273 - t2, 199 - t2, 284 - t2, t2], dtype=F64).sqrt()
    torch.testing.assert_close(params_from_channel_cov(cov), expected, rtol=1e-15, atol=0)
    anti = torch.tensor([[100.0, -50.0, 0.0], [-50.0, 100.0, 0.0], [0.0, 0.0, 0.01]], dtype=F64)
    got = params_from_channel_cov(anti)  # negative mean covariance: no common part; own floored at 0.255²
    assert got[3] == 0.0 and got[0] == 10.0 and got[2] == pytest.approx(0.255)


def test_estimate_recovers_s_and_t_within_10_percent() -> None:
    """8 smooth 256² images: 128 windows of 31·32 residuals each; the smallest s (s_g² = 39 of 199) is the
    least certain, as it is a difference of two estimates."""
    model = GaussianChannelsNoise(CAMERA)
    clean = torch.from_numpy(np.stack([smooth_image()] * 8)).permute(0, 3, 1, 2).contiguous()
    noisy = model.corrupt(clean, model.sample_params(8), gen(80))
    estimate = model.estimate_params(list(noisy))
    truth = model.low
    assert estimate.shape == (4,) and estimate.dtype == F64
    assert ((estimate / truth - 1).abs() < 0.1).all(), (estimate, truth)
    source = build_level_source("global", 3, model.num_params)
    start = initialise_from_data(source, model, noisy)
    assert list(start) == list(model.param_names)
    assert source.params(model) == pytest.approx(start, rel=1e-5)  # float32 raw
    with pytest.raises(ValueError, match="RGB images; got 1"):
        model.estimate_params([noisy[0, :1]])


# ---------------------------------------------------------------- a run


def test_learned_start_is_the_models_own_estimate_not_the_checks_gaussian_sigma(
    tmp_path: Path,
) -> None:
    """The noise check's ``correlated_sigma`` is a Gaussian σ; this model's estimate already looks past the
    spatial correlation, so the start is its own four values."""
    folder = write_set(tmp_path / "noisy", "rgb8", count=6)
    cfg = compose_config(*noisy_overrides(folder, "noise=gaussian_channels"), output_dir=tmp_path / "r")
    config = RunConfig.from_dictconfig(cfg)
    module = DenoiserModule(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    dm = DenoisingDataModule(config.data_settings, noise=module.noise)
    estimate = initialise_level(config.noise_params.init, module, dm, correlated_sigma=3.0)
    assert list(estimate) == list(module.noise.param_names)
    expected = module.noise.estimate_params(dm.estimation_images(ESTIMATION_IMAGES))
    assert list(estimate.values()) == pytest.approx(expected.tolist(), rel=1e-12)
    assert estimate["sigma_r"] == pytest.approx(25.0, rel=0.2)  # write_set: independent σ = 25 per channel
    learned = module.learned_level()
    assert [learned[k] for k in ("sigma_r", "sigma_g", "sigma_b")] == pytest.approx(
        expected[:3].tolist(), rel=1e-5
    )
    # Independent noise: no common part measured (t = 0), and the learned std starts just above its floor.
    assert estimate["sigma_common"] == 0.0 and learned["sigma_common"] == pytest.approx(2e-3 * 255, rel=1e-5)


def test_train_stores_four_learned_params_and_denoise_uses_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_set(tmp_path / "noisy", "rgb8")
    out = tmp_path / "run"
    metrics = run(compose_config(*noisy_overrides(folder, "noise=gaussian_channels"), output_dir=out))
    ckpt = read_checkpoint(out / "checkpoints" / "last.ckpt")
    level = ckpt["ssdn_level"]
    assert list(level) == ["sigma_r", "sigma_g", "sigma_b", "sigma_common"] and metrics[
        "noise_level"
    ] == pytest.approx(level)
    assert level["sigma_r"] == pytest.approx(25.0, rel=0.25)  # started at the data's estimate, not at 4.9
    capsys.readouterr()
    ckpt_path = str(out / "checkpoints" / "last.ckpt")
    denoise_main([ckpt_path, str(folder / "00.png"), "--out", str(tmp_path / "d"), "--device", "cpu"])
    text = capsys.readouterr().out
    assert f"sigma_r={level['sigma_r']:.6g}" in text and f"sigma_common={level['sigma_common']:.6g}" in text
    denoise_main(
        [
            ckpt_path,
            str(folder / "00.png"),
            "--out",
            str(tmp_path / "e"),
            "--device",
            "cpu",
            "--param",
            "20,20,20,5",
        ]
    )
    assert "sigma_r=20 sigma_g=20 sigma_b=20 sigma_common=5" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        denoise_main([ckpt_path, str(folder / "00.png"), "--out", str(tmp_path / "f"), "--param", "20,20"])
    assert info.value.code == 2
    assert "needs 4 value(s)" in capsys.readouterr().err
