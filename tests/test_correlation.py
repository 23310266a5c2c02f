"""ssdn.noise.correlation: the noise's spatial correlation measured from noisy images alone (issue 27)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssdn.noise import correlation as corr
from ssdn.noise.correlation import (
    MIN_INTENSITY_SPAN,
    VarianceLine,
    estimate_correlation,
    noise_correlation,
    noise_model_for,
    recommend,
    signal_dependence,
)

SIZE = 256


def smooth_image(size: int = SIZE) -> np.ndarray:
    """A gently shaded RGB image in (0.2, 0.8): no clipping, little structure."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    return np.stack([0.3 + 0.3 * xx * yy, 0.5 + 0.1 * np.sin(3 * xx), 0.4 + 0.2 * yy], axis=-1)


def textured_image(size: int = SIZE) -> np.ndarray:
    """Like a photo: fine texture and stripes over 60% of it, a disc edge, smooth shading elsewhere."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    texture = 0.15 * np.sin(xx / 3.0) * np.cos(yy / 5.0) + 0.1 * ((xx // 16) % 2)
    base = 0.5 + texture * (xx < 0.6 * size) + 0.1 * yy / size
    disc = ((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 4) ** 2) * 0.1
    return np.stack([base - disc, base, base + disc * 0.5], axis=-1)


KERNEL_1D = np.array([1.0, 2.0, 1.0])


def blurred_noise(rng: np.random.Generator, shape: tuple[int, int, int], sigma: float) -> np.ndarray:
    """White noise circularly filtered by [1,2,1]⊗[1,2,1], scaled to std ``sigma``: stationary and exact."""
    n = rng.normal(size=shape)
    for axis in (0, 1):
        n = sum(w * np.roll(n, s, axis=axis) for w, s in zip(KERNEL_1D, (-1, 0, 1), strict=True))
    return n * sigma / (np.sqrt((KERNEL_1D**2).sum()) ** 2)


def analytic_rho(dy: int, dx: int) -> float:
    """ρ of ``blurred_noise``: the kernel's normalised autocorrelation, separable in y and x."""
    auto = np.correlate(KERNEL_1D, KERNEL_1D, mode="full")  # lags -2..2: 1, 4, 6, 4, 1
    r = auto / auto[2]

    def at(lag: int) -> float:
        return float(r[2 + lag]) if abs(lag) <= 2 else 0.0

    return at(dy) * at(dx)


def off_centre(m: np.ndarray) -> np.ndarray:
    k = (m.shape[-1] - 1) // 2
    mask = np.ones(m.shape[-2:], dtype=bool)
    mask[k, k] = False
    return m[..., mask]


# ---------------------------------------------------------------------------------------------- model


def test_design_maps_white_noise_to_the_first_difference_autocovariance() -> None:
    """Cov[e_x(p), e_x(p + d)] of white noise (R = δ): 2 at d = 0, −1 at d = (0, ±1), 0 elsewhere."""
    a = corr._design(2)
    delta = np.zeros(a.shape[1])
    delta[0] = 1.0  # R(0, 0), the first half offset
    cov = a @ delta
    offsets = corr._half_offsets(3)
    expected_x = {(0, 0): 2.0, (0, 1): -1.0}
    expected_y = {(0, 0): 2.0, (1, 0): -1.0}
    for i, d in enumerate(offsets):
        assert cov[i] == expected_x.get(d, 0.0)
        assert cov[len(offsets) + i] == expected_y.get(d, 0.0)


def test_true_correlation_of_a_checkerboard_is_minus_one_at_one_pixel() -> None:
    board = (np.indices((8, 8)).sum(axis=0) % 2 * 2.0 - 1.0)[:, :, None] * 0.1
    r = noise_correlation([board], radius=2)
    assert r.at(0, 1) == pytest.approx(-1.0)
    assert r.at(1, 0) == pytest.approx(-1.0)
    assert r.at(1, 1) == pytest.approx(1.0)
    assert r.at(0, 2) == pytest.approx(1.0)
    assert r.sigma == pytest.approx(0.1 * 255)
    assert r.extent == 2
    assert not r.independent


# ---------------------------------------------------------------------------------------------- estimate


def test_white_noise_is_independent_at_every_offset() -> None:
    """Tolerance 0.04: over 20 seeds of this set-up (24 windows, ~140k residuals) the largest |ρ| of the 48
    non-zero offsets was 0.018 (0.034 per channel), i.e. the sampling error of one offset is ≈ 0.005."""
    rng = np.random.default_rng(0)
    images = [smooth_image() + rng.normal(0, 20 / 255, (SIZE, SIZE, 3)) for _ in range(4)]
    r = estimate_correlation(images)
    assert r.rho.shape == (7, 7)
    assert r.at(0, 0) == 1.0
    np.testing.assert_allclose(r.rho, r.rho[::-1, ::-1])
    assert np.abs(off_centre(r.rho)).max() < 0.04
    assert r.independent and r.extent == 0
    assert r.sigma == pytest.approx(20.0, rel=0.03)


def test_blurred_noise_recovers_the_analytic_correlation_and_extent() -> None:
    """Tolerance 0.04 on ρ: the white-noise test's bound; correlated residuals sample a little worse."""
    rng = np.random.default_rng(1)
    images = [smooth_image() + blurred_noise(rng, (SIZE, SIZE, 3), 15 / 255) for _ in range(4)]
    r = estimate_correlation(images)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (0, 2), (1, 2), (2, 2), (0, 3), (3, 3)):
        assert r.at(dy, dx) == pytest.approx(analytic_rho(dy, dx), abs=0.04), (dy, dx)
    assert analytic_rho(0, 1) == pytest.approx(2 / 3)
    assert not r.independent
    assert r.extent == 2  # ρ(0, 2) = 1/6 > 0.1 > ρ(2, 2) = 1/36, and 0 beyond
    assert r.sigma == pytest.approx(15.0, rel=0.05)


def test_sigma_of_white_noise_on_a_textured_image() -> None:
    rng = np.random.default_rng(2)
    images = [textured_image() + rng.normal(0, 12 / 255, (SIZE, SIZE, 3)) for _ in range(8)]
    r = estimate_correlation(images)
    assert r.sigma == pytest.approx(12.0, rel=0.05)
    assert r.independent


def test_uint8_input_is_scaled_like_float_and_seeded_sampling_is_reproducible(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(corr, "MAX_WINDOWS_PER_IMAGE", 5)  # forces the random draw of candidate windows
    rng = np.random.default_rng(3)
    u8 = np.clip(np.rint((smooth_image() + rng.normal(0, 10 / 255, (SIZE, SIZE, 3))) * 255), 0, 255)
    u8 = u8.astype(np.uint8)
    a = estimate_correlation([u8], seed=7)
    b = estimate_correlation([u8.astype(np.float64) / 255.0], seed=7)
    np.testing.assert_array_equal(a.rho, b.rho)
    assert a.sigma == b.sigma
    assert estimate_correlation([u8], seed=8).sigma != a.sigma  # another draw of windows
    assert json.loads(json.dumps(a.to_dict()))["radius"] == 3


def test_errors() -> None:
    with pytest.raises(ValueError, match="radius"):
        estimate_correlation([smooth_image()], radius=0)
    with pytest.raises(ValueError, match="large enough"):
        estimate_correlation([smooth_image(40)])
    with pytest.raises(ValueError, match="no measurable noise"):
        estimate_correlation([smooth_image()])  # noise-free
    with pytest.raises(ValueError, match="clipped"):
        estimate_correlation([np.ones((SIZE, SIZE, 3))])
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        estimate_correlation([np.zeros((SIZE, SIZE))])


# ---------------------------------------------------------------------------------------------- recommend


def _ramp_noisy(rng: np.random.Generator, a: float, b: float) -> np.ndarray:
    x = np.repeat(np.linspace(0.1, 0.9, SIZE)[None, :, None], SIZE, axis=0).repeat(3, axis=2)
    return x + rng.normal(size=x.shape) * np.sqrt(a * x + b)


def test_signal_dependence_chooses_the_noise_model() -> None:
    rng = np.random.default_rng(4)
    line = signal_dependence([_ramp_noisy(rng, 0.01, 1e-4)])
    assert line.a == pytest.approx(0.01, rel=0.2)
    assert line.low < 0.2 and line.high > 0.8  # the ramp's 0.1..0.9, less the bins' averaging
    independent = noise_correlation([rng.normal(size=(64, 64, 3)) * 0.05])
    rec = recommend(independent, line)
    assert rec.noise == "poisson_gaussian" and "at least 25%" in rec.noise_reason
    rec = recommend(independent, signal_dependence([_ramp_noisy(rng, 0.0, (20 / 255) ** 2)]))
    assert rec.noise == "gaussian" and "below 25%" in rec.noise_reason


def test_one_brightness_falls_back_to_gaussian() -> None:
    """A flat field cannot tell a·x from b: whatever the fit's split, the advice is one learned σ, and says why."""
    rng = np.random.default_rng(6)
    flat = np.full((SIZE, SIZE, 3), 0.4)
    line = signal_dependence([flat + rng.normal(size=flat.shape) * np.sqrt(0.01 * flat)])  # Poisson-like
    assert line.span < MIN_INTENSITY_SPAN
    white = noise_correlation([rng.normal(size=(64, 64, 3))])
    rec = recommend(white, line)
    assert rec.noise == "gaussian" and "too narrow" in rec.noise_reason
    # The same line over a wide range would have been Poisson-Gaussian: only the span decides here.
    wide = VarianceLine(a=0.01, b=0.0, low=0.1, high=0.9)
    assert noise_model_for(wide)[0] == "poisson_gaussian"
    assert noise_model_for(VarianceLine(a=0.01, b=0.0, low=0.4, high=0.4 + MIN_INTENSITY_SPAN))[0] == (
        "poisson_gaussian"
    )
    assert noise_model_for(VarianceLine(a=0.01, b=0.0, low=0.4, high=0.64))[0] == "gaussian"


def test_recommend_blind_region_from_the_extent() -> None:
    rng = np.random.default_rng(5)
    white = noise_correlation([rng.normal(size=(128, 128, 3))])
    assert white.independent
    rec = recommend(white, VarianceLine(0.0, 1e-3, 0.1, 0.9))
    assert rec.blind_spot_applies and (rec.blind_hole, rec.pd_stride) == (1, 1)
    assert rec.alternatives == (
        (
            "data.add_noise=false",
            "noise=gaussian",
            "noise_params=sigma_global",
            "method.blind_hole=1",
            "method.pd_stride=1",
        ),
    )
    blurred = noise_correlation([blurred_noise(rng, (128, 128, 3), 0.05)])
    assert blurred.extent == 2
    rec = recommend(blurred, VarianceLine(0.0, 1e-3, 0.1, 0.9))
    assert not rec.blind_spot_applies and (rec.blind_hole, rec.pd_stride) == (5, 3)
    assert [alt[-1] for alt in rec.alternatives] == ["method.blind_hole=5", "method.pd_stride=3"]
    assert json.loads(json.dumps(rec.to_dict()))["overrides"][1][-1] == "method.pd_stride=3"
    # over 1 px: trained with the 3×3 square, denoised with the 1-pixel blind spot
    white_n = rng.normal(size=(128, 128, 3))
    pair = white_n + np.roll(white_n, 1, axis=0)  # [1, 1]⊗[1, 1]: ρ(0, 1) = 0.5, nothing beyond 1 px
    near = noise_correlation([0.05 * (pair + np.roll(pair, 1, axis=1)) / 2])
    assert near.extent == 1
    rec = recommend(near, VarianceLine(0.0, 1e-3, 0.1, 0.9))
    assert rec.alternatives[0][-2:] == ("method.blind_hole=3", "method.blind_hole_infer=1")
    assert rec.alternatives[1][-1] == "method.pd_stride=2"


# ---------------------------------------------------------------------------------------------- channels


def test_true_channel_cov_is_the_sample_covariance_at_one_pixel() -> None:
    rng = np.random.default_rng(7)
    n = rng.normal(size=(32, 32, 3)) @ np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.4], [0.0, 0.0, 1.0]]) * 0.04
    r = noise_correlation([n])
    e = (n - n.mean(axis=(0, 1))).reshape(-1, 3)
    np.testing.assert_allclose(r.channel_cov, e.T @ e / len(e) * 255**2, rtol=1e-12)
    np.testing.assert_allclose(np.diag(r.channel_cov), np.square(r.sigma_per_channel), rtol=1e-12)
    rho = r.channel_rho
    assert np.allclose(np.diag(rho), 1.0) and np.allclose(rho, rho.T)
    assert r.channel_correlation == pytest.approx(rho[np.triu_indices(3, 1)].mean())
    assert noise_correlation([n[..., :1]]).channel_correlation == 0.0  # mono: no other channel
    assert json.loads(json.dumps(r.to_dict()))["channel_correlation"] == round(r.channel_correlation, 4)


def common_noise(rng: np.random.Generator, own: float, common: float, blurred: bool) -> np.ndarray:
    """Per-channel white noise of std ``own`` plus one std-``common`` component shared by R, G, B (spatially
    blurred as ``blurred_noise`` when ``blurred``): channel correlation common² / (own² + common²)."""
    shared = (
        blurred_noise(rng, (SIZE, SIZE, 1), common) if blurred else rng.normal(0, common, (SIZE, SIZE, 1))
    )
    return rng.normal(0, own, (SIZE, SIZE, 3)) + shared


@pytest.mark.parametrize("blurred", [False, True], ids=["white", "blurred"])
def test_channel_correlation_is_recovered_past_the_spatial_correlation(blurred: bool) -> None:
    """Tolerance 0.04 on the correlation: the white-noise test's bound on ρ; σ_own = 10, σ_common = 12
    (correlation 0.59, near the simulated camera's 0.64)."""
    rng = np.random.default_rng(8)
    images = [smooth_image() + common_noise(rng, 10 / 255, 12 / 255, blurred) for _ in range(4)]
    r = estimate_correlation(images)
    truth = 144 / (100 + 144)
    assert r.channel_rho[np.triu_indices(3, 1)] == pytest.approx([truth] * 3, abs=0.04)
    np.testing.assert_allclose(r.channel_cov, np.full((3, 3), 144.0) + 100 * np.eye(3), rtol=0.06)
    white = estimate_correlation(
        [smooth_image() + rng.normal(0, 20 / 255, (SIZE, SIZE, 3)) for _ in range(4)]
    )
    assert abs(white.channel_correlation) < 0.04


def test_recommend_gaussian_channels_for_correlated_channels_unless_signal_dependent() -> None:
    rng = np.random.default_rng(9)
    flat_line = VarianceLine(0.0, 1e-3, 0.1, 0.9)
    common = noise_correlation([common_noise(rng, 10 / 255, 12 / 255, blurred=False)])
    assert common.channel_correlation > corr.CHANNEL_RHO_THRESHOLD
    rec = recommend(common, flat_line)
    assert rec.noise == "gaussian_channels" and "correlates by 0.5" in rec.noise_reason
    assert "noise=gaussian_channels" in rec.alternatives[0]
    # Signal-dependent noise keeps Poisson–Gaussian; mono and weakly correlated channels keep one σ.
    assert noise_model_for(VarianceLine(0.01, 0.0, 0.1, 0.9), common)[0] == "poisson_gaussian"
    assert noise_model_for(VarianceLine(0.01, 0.0, 0.4, 0.5), common)[0] == "gaussian_channels"  # narrow span
    mono = noise_correlation([common_noise(rng, 10 / 255, 12 / 255, blurred=False)[..., :1]])
    assert noise_model_for(flat_line, mono)[0] == "gaussian"
    weak = noise_correlation([common_noise(rng, 10 / 255, 4 / 255, blurred=False)])  # correlation ≈ 0.14
    name, reason = noise_model_for(flat_line, weak)
    assert name == "gaussian" and f"at most {corr.CHANNEL_RHO_THRESHOLD}" in reason
