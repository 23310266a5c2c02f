"""Bayesian maths of ssdn.noise: marginals (Eqs. 3, 7, 8), the NLL loss (Eq. 4), its gradients, the
learned-level regulariser, and the posterior means (Eqs. 6, 10) against independent references."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from ssdn.methods.prior import prior_channels, split_prior
from ssdn.noise import GaussianNoise, ImpulseNoise, NoiseModel, PoissonNoise

F64 = torch.float64
EPS = 1e-6  # the authors' ridge in the posterior means and on Σ_x for impulse


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_raw(n: int, c: int, size: int, seed: int) -> torch.Tensor:
    """Raw full-prior network output: μ in [0.1, 0.9], A with diagonal |a_ii| in [0.05, 0.15] (well
    conditioned)."""
    g = gen(seed)
    k = prior_channels("full", c)
    mu = 0.1 + 0.8 * torch.rand(n, c, size, size, generator=g, dtype=F64)
    a = 0.05 * torch.randn(n, k - c, size, size, generator=g, dtype=F64)
    diag = [i * c - i * (i - 1) // 2 for i in range(c)]  # positions of A_ii in the row-major upper triangle
    sign = torch.where(torch.rand(n, c, size, size, generator=g, dtype=F64) < 0.5, -1.0, 1.0)
    a[:, diag] = sign * (0.05 + 0.1 * torch.rand(n, c, size, size, generator=g, dtype=F64))
    return torch.cat([mu, a], dim=1)


def make_model(name: str) -> NoiseModel:
    return {
        "gaussian": GaussianNoise([5, 50]),
        "poisson": PoissonNoise([5, 50]),
        "impulse": ImpulseNoise([0.1, 0.9]),
    }[name]


def make_case(name: str, c: int, seed: int, n: int = 3, size: int = 4):
    model = make_model(name)
    mu, cov = split_prior(make_raw(n, c, size, seed), "full", c)
    level = model.to_level(model.sample_params(n, generator=gen(seed + 1))).view(n, 1, 1)
    y = mu + 0.1 * torch.randn(mu.shape, generator=gen(seed + 2), dtype=F64)
    return model, y, mu, cov, level


NAMES = ["gaussian", "poisson", "impulse"]
CHANNELS = [3, 1]


# ---------------------------------------------------------------- marginals against hand-built matrices


@pytest.mark.parametrize("c", CHANNELS)
def test_gaussian_marginal_eq3(c: int) -> None:
    model, _, mu, cov, level = make_case("gaussian", c, seed=1)
    mu_y, cov_y = model.marginal(mu, cov, level)
    assert torch.equal(mu_y, mu)
    sigma = level[..., None, None]
    torch.testing.assert_close(cov_y, cov + sigma**2 * torch.eye(c, dtype=F64), rtol=1e-15, atol=0)
    # σ = 0 is clamped at 1e-3 (the authors), keeping Σ_y positive definite.
    _, cov_0 = model.marginal(mu, torch.zeros_like(cov), 0.0)
    torch.testing.assert_close(cov_0, 1e-6 * torch.eye(c, dtype=F64).expand_as(cov), rtol=1e-15, atol=0)


@pytest.mark.parametrize("c", CHANNELS)
def test_poisson_marginal_eq7_uses_predicted_mean(c: int) -> None:
    model, _, mu, cov, level = make_case("poisson", c, seed=2)
    mu = mu.clone()
    mu[0, 0, 0] = -0.5  # a negative predicted mean: the noise variance uses max(μ_x, 1e-3)
    mu_y, cov_y = model.marginal(mu, cov, level)
    assert torch.equal(mu_y, mu)
    expected = cov + torch.diag_embed(torch.clamp_min(mu, 1e-3) * level[..., None])
    torch.testing.assert_close(cov_y, expected, rtol=1e-15, atol=0)
    assert cov_y[0, 0, 0, 0, 0] == pytest.approx(
        cov[0, 0, 0, 0, 0].item() + 1e-3 * level[0].item(), rel=1e-14
    )


def test_impulse_marginal_eq8_rgb_literal_matrix() -> None:
    model, _, mu, cov, level = make_case("impulse", 3, seed=3)
    mu_y, cov_y = model.marginal(mu, cov, level)
    a = level[..., None]
    am = level[..., None, None]
    eye = torch.eye(3, dtype=F64)
    paper = torch.tensor([[4.0, 3.0, 3.0], [3.0, 4.0, 3.0], [3.0, 3.0, 4.0]], dtype=F64) / 12
    exp_mu = a / 2 + (1 - a) * mu
    outer = lambda u: u[..., :, None] * u[..., None, :]  # noqa: E731
    exp_cov = am * paper + (1 - am) * (cov + EPS * eye + outer(mu)) - outer(exp_mu)
    torch.testing.assert_close(mu_y, exp_mu, rtol=1e-15, atol=0)
    torch.testing.assert_close(cov_y, exp_cov, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("c", CHANNELS)
def test_impulse_marginal_equals_exact_mixture_moments(c: int) -> None:
    """Independent derivation (law of total covariance) of the mixture α·U[0,1)^C + (1−α)·N(μ, Σ+εI):
    Cov = α·I/12 + (1−α)·(Σ+εI) + α(1−α)·(½𝟙 − μ)(½𝟙 − μ)ᵀ; for mono this is Eq. 8's α/3 − … form."""
    model, _, mu, cov, level = make_case("impulse", c, seed=4)
    mu_y, cov_y = model.marginal(mu, cov, level)
    a, am = level[..., None], level[..., None, None]
    eye = torch.eye(c, dtype=F64)
    diff = 0.5 - mu
    exp_cov = (
        am * eye / 12 + (1 - am) * (cov + EPS * eye) + am * (1 - am) * diff[..., :, None] * diff[..., None, :]
    )
    torch.testing.assert_close(mu_y, a / 2 + (1 - a) * mu, rtol=1e-15, atol=0)
    torch.testing.assert_close(cov_y, exp_cov, rtol=1e-12, atol=1e-15)
    if c == 1:
        m, s2, al = mu[..., 0], cov[..., 0, 0] + EPS, level
        mono = al / 3 + (1 - al) * (s2 + m**2) - (al / 2 + (1 - al) * m) ** 2
        torch.testing.assert_close(cov_y[..., 0, 0], mono, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- NLL = −log N(y; μ_y, Σ_y) − C/2·log 2π


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("name", NAMES)
def test_nll_equals_gaussian_negative_log_density(name: str, c: int) -> None:
    model, y, mu, cov, level = make_case(name, c, seed=10 + c)
    mu_y, cov_y = model.marginal(mu, cov, level)
    assert (torch.linalg.det(cov_y) > 1e-9).all()  # the impulse det floor must not interfere here
    reference = -MultivariateNormal(mu_y, covariance_matrix=cov_y).log_prob(y) - c / 2 * math.log(2 * math.pi)
    loss = model.nll(y, mu, cov, level)
    assert loss.shape == mu.shape[:-1] and loss.dtype == F64
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-9)


def test_nll_det_floor_only_for_impulse() -> None:
    """Gaussian: no floor (Σ_y = 1e-6·I gives ½·log 1e-18); impulse: det Σ_y clamped at 1e-9 (the authors)."""
    mu = torch.full((1, 1, 1, 3), 0.5, dtype=F64)
    zero = torch.zeros(1, 1, 1, 3, 3, dtype=F64)
    assert GaussianNoise(0).nll(mu, mu, zero, 0.0).item() == pytest.approx(0.5 * math.log(1e-18), rel=1e-12)
    # α = 0: Σ_y = Σ_x + 1e-6·I, det = 1e-18 < 1e-9; d = 1e-3·𝟙 gives ½·dᵀΣ_y⁻¹d = ½·3e-6/1e-6 = 1.5.
    y = mu + 1e-3
    assert ImpulseNoise(0).nll(y, mu, zero, 0.0).item() == pytest.approx(0.5 * math.log(1e-9) + 1.5, rel=1e-9)


def test_nll_casts_to_float64_and_validates_shapes() -> None:
    model, y, mu, cov, level = make_case("gaussian", 3, seed=20)
    loss32 = model.nll(y.float(), mu.float(), cov.float(), level.float())
    assert loss32.dtype == F64
    with pytest.raises(ValueError, match="level must be 0-d or broadcastable"):
        model.nll(y, mu, cov, level.view(-1))  # (N,) would silently broadcast against W
    with pytest.raises(ValueError, match="level must be 0-d or broadcastable"):
        model.nll(y, mu, cov, torch.ones(2, 1, 1, dtype=F64))
    with pytest.raises(ValueError, match="y and mu must have the same shape"):
        model.nll(y[..., :2], mu, cov, level)
    with pytest.raises(ValueError, match=r"cov \(\.\.\., C, C\)"):
        model.nll(y, mu, cov[..., :2, :2], level)
    assert model.nll(y, mu, cov, 0.1).shape == mu.shape[:-1]
    assert model.nll(y, mu, cov, torch.tensor(0.1)).shape == mu.shape[:-1]


# ---------------------------------------------------------------- regulariser


def test_regulariser_values_and_shapes() -> None:
    _, _, mu, _, level = make_case("gaussian", 3, seed=30)
    lead = mu.shape[:-1]
    reg = GaussianNoise(25).regulariser(mu, level)
    assert reg.shape == lead
    torch.testing.assert_close(reg, (-0.1 * level).expand(lead), rtol=1e-15, atol=0)
    mono = mu[..., :1]
    torch.testing.assert_close(GaussianNoise(25).regulariser(mono, level), (-0.05 * level).expand(lead))
    poisson = PoissonNoise(30).regulariser(mu, level)
    torch.testing.assert_close(poisson, -0.1 * (mu * level[..., None]).sqrt().mean(-1), rtol=1e-14, atol=0)
    low = torch.full_like(mono, -1.0)  # variance uses max(μ, 1e-3)
    torch.testing.assert_close(
        PoissonNoise(30).regulariser(low, level), (-0.05 * (1e-3 * level).sqrt()).expand(lead)
    )
    imp = ImpulseNoise(0.5).regulariser(mu, level)
    assert imp.shape == lead and (imp == 0).all()


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_loss_wrt_raw_output_and_level(name: str, c: int) -> None:
    model = make_model(name)
    raw = make_raw(2, c, 2, seed=40 + c).requires_grad_()
    level = model.to_level(model.sample_params(2, generator=gen(41))).view(2, 1, 1).requires_grad_()
    y = raw.detach()[:, :c].permute(0, 2, 3, 1) + 0.1 * torch.randn(2, 2, 2, c, generator=gen(42), dtype=F64)

    def loss(raw: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        mu, cov = split_prior(raw, "full", c)
        return model.nll(y, mu, cov, level) + model.regulariser(mu, level)

    assert torch.autograd.gradcheck(loss, (raw, level))
    loss(raw, level).sum().backward()
    assert raw.grad is not None and (raw.grad != 0).all()
    assert level.grad is not None and (level.grad != 0).all()


# ---------------------------------------------------------------- posterior means: Gaussian / Poisson


def reference_eq6(y: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor, cov_n: torch.Tensor, eps: float):
    """Eq. 6 via torch.linalg: (P_x + P_n + εI)⁻¹(P_x μ + P_n y), P = (Σ + εI)⁻¹ (ε = 0: the pure paper
    formula)."""
    eye = torch.eye(mu.shape[-1], dtype=F64)
    p_x = torch.linalg.inv(cov + eps * eye)
    p_n = torch.linalg.inv(cov_n + eps * eye)
    rhs = (p_x @ mu[..., None] + p_n @ y[..., None]).squeeze(-1)
    return torch.linalg.solve(p_x + p_n + eps * eye, rhs)


def ridge_tolerance(y, mu, cov, cov_n) -> torch.Tensor:
    """Bound on the effect of the authors' ε ridges versus the pure Eq. 6.

    Each covariance moves by ε relative to its smallest eigenvalue, so PME = μ + K(y − μ) moves by at most
    about ε·(1/λ_min(Σ_x) + 1/λ_min(Σ_n))·‖y − μ‖ (×2 margin; observed ≈ 5 % of it). With λ_min(Σ_x) ≈
    6e-4…3e-3 here that is up to ~1e-3 of the correction y − μ, so a 1e-6 relative tolerance would be wrong,
    not strict."""
    lam_x = torch.linalg.eigvalsh(cov)[..., 0]
    lam_n = torch.linalg.eigvalsh(cov_n.expand_as(cov))[..., 0]
    return 2 * EPS * (1 / lam_x + 1 / lam_n) * (y - mu).norm(dim=-1)


@pytest.mark.parametrize("c", CHANNELS)
def test_gaussian_posterior_mean_eq6(c: int) -> None:
    model, y, mu, cov, level = make_case("gaussian", c, seed=50)
    pme = model.posterior_mean(y, mu, cov, level)
    assert pme.shape == mu.shape and pme.dtype == F64
    cov_n = (level**2)[..., None, None] * torch.eye(c, dtype=F64)
    # Same ε terms as the authors: agreement to round-off.
    torch.testing.assert_close(pme, reference_eq6(y, mu, cov, cov_n, EPS), rtol=1e-10, atol=1e-12)
    # Pure Eq. 6 (no ε): agreement within the analytic effect of the ridges.
    err = (pme - reference_eq6(y, mu, cov, cov_n, 0.0)).norm(dim=-1)
    assert (err <= ridge_tolerance(y, mu, cov, cov_n)).all()
    assert err.max() > 0  # the ε terms are really there
    if c == 1:  # the authors' scalar form (y·σ_x² + μ·σ_n²)/(σ_x² + σ_n²)
        sx, sn = cov[..., 0, 0], level**2
        mono = (y[..., 0] * sx + mu[..., 0] * sn) / (sx + sn)
        assert ((pme[..., 0] - mono).abs() <= ridge_tolerance(y, mu, cov, cov_n)).all()


@pytest.mark.parametrize("c", CHANNELS)
def test_poisson_posterior_mean_uses_diag_mu_over_lambda(c: int) -> None:
    model, y, mu, cov, level = make_case("poisson", c, seed=51)
    pme = model.posterior_mean(y, mu, cov, level)
    cov_n = torch.diag_embed(mu * level[..., None])  # μ ≥ 0.1 here, so the 1e-3 clamp is inactive
    torch.testing.assert_close(pme, reference_eq6(y, mu, cov, cov_n, EPS), rtol=1e-10, atol=1e-12)
    err = (pme - reference_eq6(y, mu, cov, cov_n, 0.0)).norm(dim=-1)
    assert (err <= ridge_tolerance(y, mu, cov, cov_n)).all()
    gauss = GaussianNoise(25).posterior_mean(y, mu, cov, level.sqrt())
    assert not torch.allclose(pme, gauss)  # signal-dependent, not a constant σ


def test_additive_posterior_mean_limits() -> None:
    """Tiny noise returns y, huge noise returns μ_x (Eq. 6's "mixing in" of y)."""
    model, y, mu, cov, _ = make_case("gaussian", 3, seed=52)
    torch.testing.assert_close(model.posterior_mean(y, mu, cov, 1e-3), y, rtol=0, atol=1e-3)
    torch.testing.assert_close(model.posterior_mean(y, mu, cov, 1e3), mu, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- posterior means: impulse (Eq. 10)


def test_impulse_posterior_mean_mono_numerical_integration() -> None:
    """Posterior (Eq. 9) ∝ α·f(x) + (1−α)·δ(y − x)·f(x), f = N(μ, s²) with the model's prior s² = σ_x² + ε.
    Continuous part integrated on a fine grid (trapezoid, ±14 s), Dirac part added analytically."""
    mu = torch.tensor([0.5, 0.5, 0.2, 0.8, 0.3, 0.6], dtype=F64)
    sx2 = torch.tensor([1e-2, 1e-3, 4e-3, 2e-2, 1e-4, 5e-3], dtype=F64)
    y = torch.tensor([0.5, 0.55, 0.4, 0.1, 0.302, 0.75], dtype=F64)
    alpha = torch.tensor([0.5, 0.3, 0.9, 0.2, 0.5, 0.7], dtype=F64)
    s2 = sx2 + EPS
    s = s2.sqrt()
    t = torch.linspace(-14, 14, 200001, dtype=F64)
    x = mu[:, None] + s[:, None] * t[None, :]
    f = torch.exp(-0.5 * (x - mu[:, None]) ** 2 / s2[:, None]) / torch.sqrt(2 * math.pi * s2[:, None])
    cont_num = alpha * torch.trapezoid(x * f, x, dim=-1)
    cont_den = alpha * torch.trapezoid(f, x, dim=-1)
    f_y = torch.exp(-0.5 * (y - mu) ** 2 / s2) / torch.sqrt(2 * math.pi * s2)
    expected = (cont_num + (1 - alpha) * f_y * y) / (cont_den + (1 - alpha) * f_y)
    weight_y = (1 - alpha) * f_y / (alpha + (1 - alpha) * f_y)
    assert weight_y.min() < 0.05 and weight_y.max() > 0.95  # both terms of Eq. 10 are exercised
    pme = ImpulseNoise([0, 1]).posterior_mean(y[:, None], mu[:, None], sx2[:, None, None], alpha)
    torch.testing.assert_close(pme[:, 0], expected, rtol=1e-10, atol=1e-12)


def test_impulse_posterior_mean_rgb_importance_sampling() -> None:
    """x ~ prior N(μ, Σ_x + εI) as the proposal: the continuous part of Eq. 9 has constant weight α, the Dirac
    part is analytic with the density from torch.distributions. Tolerance: 5 standard errors √(Σ_ii/M) of the
    mean."""
    n_pix, m = 8, 40000
    _, _, mu, cov, _ = make_case("impulse", 3, seed=60, n=1, size=n_pix)
    mu, cov = mu.reshape(-1, 3)[:n_pix], cov.reshape(-1, 3, 3)[:n_pix]
    cov = cov + EPS * torch.eye(3, dtype=F64)
    chol = torch.linalg.cholesky(cov)
    # y at Mahalanobis distance 0..7 from μ so that Eq. 10's weight on y spans (0, 1).
    direction = torch.nn.functional.normalize(torch.randn(n_pix, 3, generator=gen(61), dtype=F64), dim=-1)
    y = mu + (chol @ direction[..., None]).squeeze(-1) * torch.linspace(0, 7, n_pix, dtype=F64)[:, None]
    alpha = torch.linspace(0.1, 0.9, n_pix, dtype=F64)
    z = torch.randn(n_pix, m, 3, generator=gen(62), dtype=F64)
    samples = mu[:, None] + (chol[:, None] @ z[..., None]).squeeze(-1)
    cont_num = alpha[:, None] * samples.mean(1)
    f_y = MultivariateNormal(mu, covariance_matrix=cov).log_prob(y).exp()
    w = ((1 - alpha) * f_y)[:, None]
    expected = (cont_num + w * y) / (alpha[:, None] + w)
    weight_y = w[:, 0] / (alpha + w[:, 0])
    assert weight_y.min() < 0.05 and weight_y.max() > 0.95
    pme = ImpulseNoise([0, 1]).posterior_mean(y, mu, cov - EPS * torch.eye(3, dtype=F64), alpha)
    tol = 5 * (torch.diagonal(cov, dim1=-2, dim2=-1) / m).sqrt()
    assert ((pme - expected).abs() <= tol).all()
    assert ((pme - expected).abs() > 0).any()


@pytest.mark.parametrize("c", CHANNELS)
def test_impulse_posterior_mean_limits(c: int) -> None:
    model, y, mu, cov, _ = make_case("impulse", c, seed=70)
    torch.testing.assert_close(model.posterior_mean(y, mu, cov, 0.0), y, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(model.posterior_mean(y, mu, cov, 1.0), mu, rtol=1e-14, atol=1e-15)
    pme = model.posterior_mean(y, mu, cov, 0.5)
    lo, hi = torch.minimum(y, mu), torch.maximum(y, mu)
    assert ((pme >= lo - 1e-15) & (pme <= hi + 1e-15)).all()  # a convex combination of μ_x and y


# ---------------------------------------------------------------- posterior std: Gaussian / Poisson


def reference_posterior_cov(cov: torch.Tensor, cov_n: torch.Tensor, eps: float) -> torch.Tensor:
    """Conditioning the joint Gaussian of (x, y = x + n) on y: Σ_x − Σ_x (Σ_x + Σ_n)⁻¹ Σ_x (the Schur
    complement, a different formula from the model's precision sum), with Σ ← Σ + εI on both covariances."""
    eye = torch.eye(cov.shape[-1], dtype=F64)
    sx, sn = cov + eps * eye, (cov_n + eps * eye).expand_as(cov)
    return sx - sx @ torch.linalg.solve(sx + sn, sx)


def additive_noise_cov(name: str, mu: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    c = mu.shape[-1]
    if name == "gaussian":
        return (level**2)[..., None, None] * torch.eye(c, dtype=F64)
    return torch.diag_embed(mu * level[..., None])  # Poisson; μ ≥ 0.1 here, so the 1e-3 clamp is inactive


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("name", ["gaussian", "poisson"])
def test_additive_posterior_std_is_schur_complement_diagonal(name: str, c: int) -> None:
    """The third ridge (εI on the precision sum) moves Σ_post by ≈ −ε·Σ_post², i.e. its diagonal by at most
    ε·λ_max(Σ_post) ≤ ε·(50/255)² ≈ 4e-8 relative (observed 2e-8): the std agrees within 3e-8."""
    model, y, mu, cov, level = make_case(name, c, seed=80)
    std = model.posterior_std(y, mu, cov, level)
    assert std.shape == mu.shape and std.dtype == F64
    post = reference_posterior_cov(cov, additive_noise_cov(name, mu, level), EPS)
    torch.testing.assert_close(std, torch.diagonal(post, dim1=-2, dim2=-1).sqrt(), rtol=3e-8, atol=0)
    # A Gaussian posterior's covariance does not depend on the observation.
    torch.testing.assert_close(model.posterior_std(2 * y, mu, cov, level), std, rtol=0, atol=0)


def test_gaussian_posterior_std_mono_exact() -> None:
    """Mono: 1/σ_post² = 1/(σ_x²+ε) + 1/(σ²+ε) + ε exactly; equal prior and noise variance halve it."""
    s2 = torch.tensor([1e-2, 4e-4, (25 / 255) ** 2], dtype=F64)
    sigma = torch.tensor([25 / 255, 0.02, 25 / 255], dtype=F64)
    mu = torch.full((3, 1), 0.5, dtype=F64)
    std = GaussianNoise(25).posterior_std(mu, mu, s2[:, None, None], sigma)[:, 0]
    expected = 1 / (1 / (s2 + EPS) + 1 / (sigma**2 + EPS) + EPS)
    torch.testing.assert_close(std**2, expected, rtol=1e-15, atol=0)
    assert std[2].item() == pytest.approx(25 / 255 / math.sqrt(2), rel=1e-4)  # the ridges move it by ~1e-4


def test_gaussian_posterior_std_importance_sampling() -> None:
    """Prior samples x ~ N(μ, Σ_x + εI) weighted by the likelihood N(y; x, σ²I): the posterior variance per
    channel. Tolerance: 5 standard errors of a weighted variance, ≈ 5·std·/√(2·ESS) relative on the std."""
    n_pix, m = 6, 200_000
    _, _, mu, cov, _ = make_case("gaussian", 3, seed=81, n=1, size=n_pix)
    mu, cov = mu.reshape(-1, 3)[:n_pix], cov.reshape(-1, 3, 3)[:n_pix] + EPS * torch.eye(3, dtype=F64)
    sigma = torch.full((n_pix,), 25 / 255, dtype=F64)
    y = mu + sigma[:, None] * torch.randn(n_pix, 3, generator=gen(82), dtype=F64)
    z = torch.randn(n_pix, m, 3, generator=gen(83), dtype=F64)
    x = mu[:, None] + (torch.linalg.cholesky(cov)[:, None] @ z[..., None]).squeeze(-1)
    logw = -0.5 * ((y[:, None] - x) ** 2).sum(-1) / sigma[:, None] ** 2
    w = torch.softmax(logw, dim=1)[..., None]
    mean = (w * x).sum(1)
    var = (w * (x - mean[:, None]) ** 2).sum(1)
    ess = 1 / (w[..., 0] ** 2).sum(1)
    assert ess.min() > 5000
    std = GaussianNoise(25).posterior_std(y, mu, cov - EPS * torch.eye(3, dtype=F64), sigma)
    rel = (std / var.sqrt() - 1).abs()
    assert (rel <= 5 / (2 * ess[:, None]).sqrt()).all()
    assert rel.max() > 0


def test_poisson_posterior_std_signal_dependent() -> None:
    """Σ_n = diag(max(μ_x, 1e-3)/λ) from the predicted mean: a brighter μ_x gives a wider posterior."""
    mu = torch.tensor([[0.1], [0.9], [-0.5]], dtype=F64)
    s2 = torch.full((3, 1, 1), 1e-2, dtype=F64)
    lam = 30.0
    std = PoissonNoise(lam).posterior_std(mu, mu, s2, torch.tensor(1 / lam, dtype=F64))[:, 0]
    var_n = torch.tensor([0.1, 0.9, 1e-3], dtype=F64) / lam
    torch.testing.assert_close(std**2, 1 / (1 / (1e-2 + EPS) + 1 / (var_n + EPS) + EPS), rtol=1e-15, atol=0)
    assert std[1] > std[0] > std[2]


# ---------------------------------------------------------------- posterior std: impulse (mixture)


def test_impulse_posterior_std_mono_numerical_integration() -> None:
    """Var = E[x²] − E[x]² of Eq. 9's posterior, both moments by the trapezoid rule on the continuous part
    (±14 s) plus the Dirac part at y; the model uses the law of total variance instead."""
    mu = torch.tensor([0.5, 0.5, 0.2, 0.8, 0.3, 0.6], dtype=F64)
    sx2 = torch.tensor([1e-2, 1e-3, 4e-3, 2e-2, 1e-4, 5e-3], dtype=F64)
    y = torch.tensor([0.5, 0.55, 0.4, 0.1, 0.302, 0.75], dtype=F64)
    alpha = torch.tensor([0.5, 0.3, 0.9, 0.2, 0.5, 0.7], dtype=F64)
    s2 = sx2 + EPS
    t = torch.linspace(-14, 14, 200001, dtype=F64)
    x = mu[:, None] + s2.sqrt()[:, None] * t[None, :]
    f = torch.exp(-0.5 * (x - mu[:, None]) ** 2 / s2[:, None]) / torch.sqrt(2 * math.pi * s2[:, None])
    f_y = torch.exp(-0.5 * (y - mu) ** 2 / s2) / torch.sqrt(2 * math.pi * s2)
    den = alpha * torch.trapezoid(f, x, dim=-1) + (1 - alpha) * f_y
    m1 = (alpha * torch.trapezoid(x * f, x, dim=-1) + (1 - alpha) * f_y * y) / den
    m2 = (alpha * torch.trapezoid(x**2 * f, x, dim=-1) + (1 - alpha) * f_y * y**2) / den
    std = ImpulseNoise([0, 1]).posterior_std(y[:, None], mu[:, None], sx2[:, None, None], alpha)[:, 0]
    torch.testing.assert_close(std**2, m2 - m1**2, rtol=1e-8, atol=1e-14)
    # Both mixture components matter somewhere: the variance exceeds the prior's where the weights are even.
    assert (std**2 > s2).any() and (std**2 < 0.05 * s2).any()


def test_impulse_posterior_std_rgb_importance_sampling() -> None:
    """Prior samples for the continuous part (constant weight α), the Dirac at y analytic. Tolerance: 5
    standard errors of the variance estimate, w·std(s² − 2·m₁·s)/√M by the delta method."""
    n_pix, m = 8, 40000
    _, _, mu, cov, _ = make_case("impulse", 3, seed=90, n=1, size=n_pix)
    mu, cov = mu.reshape(-1, 3)[:n_pix], cov.reshape(-1, 3, 3)[:n_pix] + EPS * torch.eye(3, dtype=F64)
    chol = torch.linalg.cholesky(cov)
    direction = torch.nn.functional.normalize(torch.randn(n_pix, 3, generator=gen(91), dtype=F64), dim=-1)
    y = mu + (chol @ direction[..., None]).squeeze(-1) * torch.linspace(0, 7, n_pix, dtype=F64)[:, None]
    alpha = torch.linspace(0.1, 0.9, n_pix, dtype=F64)
    s = mu[:, None] + (
        chol[:, None] @ torch.randn(n_pix, m, 3, generator=gen(92), dtype=F64)[..., None]
    ).squeeze(-1)
    f_y = MultivariateNormal(mu, covariance_matrix=cov).log_prob(y).exp()
    w = (alpha / (alpha + (1 - alpha) * f_y))[:, None]  # posterior weight of the prior component
    m1 = w * s.mean(1) + (1 - w) * y
    m2 = w * (s**2).mean(1) + (1 - w) * y**2
    std = ImpulseNoise([0, 1]).posterior_std(y, mu, cov - EPS * torch.eye(3, dtype=F64), alpha)
    se = w * (s**2 - 2 * m1[:, None] * s).std(1) / math.sqrt(m)
    assert ((std**2 - (m2 - m1**2)).abs() <= 5 * se + 1e-15).all()
    assert w.min() < 0.05 and w.max() > 0.95


@pytest.mark.parametrize("c", CHANNELS)
def test_impulse_posterior_std_limits(c: int) -> None:
    """α = 0: every pixel is kept, the posterior is the point y (std 0); α = 1: it is the prior."""
    model, y, mu, cov, _ = make_case("impulse", c, seed=93)
    std0 = model.posterior_std(y, mu, cov, 0.0)
    assert std0.shape == mu.shape and std0.dtype == F64 and (std0 == 0).all()
    prior = torch.diagonal(cov, dim1=-2, dim2=-1) + EPS
    torch.testing.assert_close(model.posterior_std(y, mu, cov, 1.0), prior.sqrt(), rtol=1e-15, atol=0)
    # At y = μ_x the two components share their mean: the variance is the prior's, shrunk by its weight.
    std = model.posterior_std(mu, mu, cov, 0.5)
    assert (std <= prior.sqrt()).all()
