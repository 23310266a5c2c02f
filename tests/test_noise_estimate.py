"""ssdn.noise.estimate: Chen et al.'s σ and the Foi-style (a, b) fit, including the bounded patch sample that
lets ``--param auto`` run on any photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ssdn.noise.estimate as estimate_module
from ssdn.data.testsets import load_testset
from ssdn.noise.estimate import (
    MAX_PATCHES,
    NUM_BINS,
    binned_variances,
    channel_patches,
    estimate_poisson_gaussian,
    estimate_sigma,
    fit_variance_line,
    noise_variance_from_eigenvalues,
    patch_covariance,
)

F64 = torch.float64
B5 = (5 / 255) ** 2


def _gauss(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return x + torch.randn(x.shape, generator=g) * sigma / 255


def _poisson_gaussian(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth (3, h, w) ramp under a = 0.01 and b = 0.02², float32, as a camera would give it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 1, generator=g) * torch.linspace(0, 1, h)[None, :, None].expand(3, h, w).clone()
    return 0.01 * torch.poisson(x / 0.01, generator=g) + 0.02 * torch.randn(x.shape, generator=g)


# ------------------------------------------------------------------------------------------------ Chen


def test_tail_mean_equals_median_rule() -> None:
    # all 6: mean 50.7 has 2 above, 4 below; 5: mean 20.8, 1 above, 4 below; 4 ones: mean 1 = median → 1
    assert noise_variance_from_eigenvalues(torch.tensor([200.0, 1, 1, 100, 1, 1])) == 1.0
    # [1, 2, 3, 4] has mean 2.5 between its two middle values
    assert noise_variance_from_eigenvalues(torch.tensor([1.0, 2, 3, 4, 50])) == 2.5


def test_patch_covariance_matches_explicit_patches() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 75, 12, generator=g, dtype=torch.float64)  # > 64 patch rows exercise the chunking
    cols = torch.nn.functional.unfold(img.unsqueeze(0), kernel_size=4)[0]  # (2·16, L)
    ref = torch.cov(cols, correction=0)
    torch.testing.assert_close(patch_covariance(img, patch=4), ref, rtol=1e-5, atol=1e-7)  # float32 products


@pytest.mark.parametrize("sigma", [5.0, 15.0, 50.0])
def test_chen_recovers_sigma_on_smooth_images(sigma: float) -> None:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 200), torch.linspace(0, 1, 160), indexing="ij")
    smooth = torch.stack([0.2 + 0.5 * xx, 0.5 + 0.2 * torch.sin(3 * yy), torch.full_like(xx, 0.4)])
    est = estimate_sigma(_gauss(smooth.unsqueeze(0), sigma)[0]) * 255
    assert est == pytest.approx(sigma, rel=0.03)
    mono = smooth[:1]
    assert estimate_sigma(_gauss(mono.unsqueeze(0), sigma, seed=2)[0]) * 255 == pytest.approx(sigma, rel=0.05)


@pytest.mark.slow
def test_chen_on_kodak_sigma25(data_root: Path) -> None:
    """Mean absolute error of σ on the 24 KODAK images at σ = 25: must be < 1 (8-bit units); got 0.052."""
    g = torch.Generator().manual_seed(0)
    errors = []
    for im in load_testset("kodak", root=data_root):
        x = torch.from_numpy(im.pixels).permute(2, 0, 1).float() / 255
        y = x + torch.randn(x.shape, generator=g) * 25 / 255
        errors.append(estimate_sigma(y) * 255 - 25)
    mae = float(np.mean(np.abs(errors)))
    assert mae < 1.0
    assert mae == pytest.approx(0.0523, abs=0.01)


# ------------------------------------------------------------------------------------------ Foi-style fit


def test_fit_variance_line_exact_and_clamped() -> None:
    means = torch.linspace(0.1, 0.7, 7, dtype=F64)
    counts = torch.full_like(means, 1000.0)
    a, b = fit_variance_line(means, 0.01 * means + B5, counts)
    assert a == pytest.approx(0.01, rel=1e-9) and b == pytest.approx(B5, rel=1e-9)
    a, b = fit_variance_line(means, 0.002 - 0.001 * means, counts)  # decreasing: a clamped to 0
    assert a == 0.0 and b > 0
    a, b = fit_variance_line(means, 0.01 * means, counts, b_zero=True)
    assert a == pytest.approx(0.01, rel=1e-12) and b == 0.0
    with pytest.raises(ValueError, match="no intensity bin"):
        fit_variance_line(means[:0], means[:0], counts[:0])


def test_small_images_give_the_estimates_of_before_sampling() -> None:
    """300×260 has 19 388 patches per channel (< MAX_PATCHES): every patch is used, and the estimate is the one
    the estimator gave before it could sample (values from commit 987a78f; the last digits of b vary from run to
    run with the threaded least squares, hence rel=1e-12)."""
    y = _poisson_gaussian(300, 260)
    assert estimate_poisson_gaussian(y) == pytest.approx(
        (0.009545638960315071, 0.0004074308099273179), rel=1e-12
    )
    assert estimate_poisson_gaussian(y, b_zero=True) == pytest.approx((0.012076259774071126, 0.0), rel=1e-12)
    assert estimate_sigma(y) == pytest.approx(0.043045113449295666, rel=1e-12)
    full = binned_variances(y, max_patches=None)
    for got, want in zip(binned_variances(y), full, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_sampled_patches_are_patches_and_always_the_same() -> None:
    channel = torch.rand(50, 41, generator=torch.Generator().manual_seed(4))
    every = channel_patches(channel, limit=None)  # (64, 22·17): the stride-2 grid
    assert every.shape == (64, 22 * 17) and every.dtype == F64
    torch.testing.assert_close(every, channel_patches(channel, limit=22 * 17), rtol=0, atol=0)
    sample = channel_patches(channel, limit=100)
    assert sample.shape == (64, 100)
    torch.testing.assert_close(sample, channel_patches(channel, limit=100), rtol=0, atol=0)  # seeded
    # each sampled column is one of the grid's patches, none twice
    matches = (sample.T[:, None, :] == every.T[None, :, :]).all(dim=2)
    assert (matches.sum(dim=1) == 1).all() and len(set(matches.int().argmax(dim=1).tolist())) == 100


def test_sampling_changes_the_fit_by_about_one_percent() -> None:
    """A 800×800 channel has 157 609 patches, more than MAX_PATCHES: the seeded sample's (a, b) is within 1.5%
    of the fit on every patch (measured: −0.57% and +0.07%). Why that much: each bin keeps ~10 900 of ~13 100
    patches, so its variance moves by ~(2/10 900)^½·(1 − 10 900/13 100)^½ ≈ 0.6%, and a and b are fitted from
    12 such bins."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 800), torch.linspace(0, 1, 800), indexing="ij")
    x = (0.1 + 0.8 * xx * (0.6 + 0.4 * torch.sin(6 * yy)))[None]
    g = torch.Generator().manual_seed(0)
    y = 0.01 * torch.poisson(x / 0.01, generator=g) + 0.02 * torch.randn(x.shape, generator=g)
    full = estimate_poisson_gaussian(y, max_patches=None)
    sampled = estimate_poisson_gaussian(y)
    assert sampled != full  # the sample was used
    assert sampled == pytest.approx(full, rel=0.015)


def test_a_24_megapixel_channel_never_unfolds_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """6000×4000: 6 million stride-2 patches per channel (3 GB in float64 if unfolded); the fit must hold at
    most MAX_PATCHES of them (64 MiB) and never unfold the whole channel."""
    unfold = F.unfold

    def bounded_unfold(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        assert x.numel() <= 4 * MAX_PATCHES, f"unfolded {tuple(x.shape)}"
        return unfold(x, *args, **kwargs)

    used: list[int] = []

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        cols = channel_patches(*args, **kwargs)  # type: ignore[arg-type]
        used.append(cols.shape[1])
        return cols

    monkeypatch.setattr(estimate_module.F, "unfold", bounded_unfold)
    monkeypatch.setattr(estimate_module, "channel_patches", counted)
    y = torch.rand(1, 4000, 6000, generator=torch.Generator().manual_seed(5))
    means, _, counts = binned_variances(y)
    assert used == [MAX_PATCHES] and counts.sum() == MAX_PATCHES
    assert len(means) == NUM_BINS and (means.diff() > 0).all()  # equal-count bins of rising intensity
