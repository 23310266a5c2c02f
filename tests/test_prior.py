"""ssdn.methods.prior: channel counts, the authors' explicit Σ_x formulas, diagonal/mono variants, PSD."""

from __future__ import annotations

import pytest
import torch

from ssdn.config.schema import Prior
from ssdn.methods.objectives import PriorObjective
from ssdn.methods.prior import prior_channels, split_prior

F64 = torch.float64


@pytest.mark.parametrize(
    ("kind", "c", "k"),
    [("full", 3, 9), ("full", 1, 2), ("diagonal", 3, 6), ("diagonal", 1, 2)],
)
def test_prior_channels(kind: str, c: int, k: int) -> None:
    assert prior_channels(kind, c) == k
    assert prior_channels(Prior(kind), c) == k


def test_prior_kind_values_and_errors() -> None:
    assert [k.value for k in Prior] == ["full", "diagonal"]
    with pytest.raises(ValueError, match=r"method.prior='cholesky': use one of full, diagonal"):
        prior_channels("cholesky", 3)
    with pytest.raises(ValueError, match="channels"):
        prior_channels("full", 0)


def _out(k: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, k, 4, 5, generator=g, dtype=dtype)


def test_full_rgb_matches_authors_explicit_formulas() -> None:
    out = _out(9)
    mu, cov = split_prior(out, "full", 3)
    assert mu.shape == (2, 4, 5, 3) and cov.shape == (2, 4, 5, 3, 3)
    assert mu.dtype == F64 and cov.dtype == F64
    o = out.to(F64)
    torch.testing.assert_close(mu, o[:, :3].permute(0, 2, 3, 1), rtol=0, atol=0)
    a0, a1, a2, a3, a4, a5 = o[:, 3:].unbind(1)
    expected = {
        (0, 0): a0**2 + a1**2 + a2**2,
        (0, 1): a1 * a3 + a2 * a4,
        (0, 2): a2 * a5,
        (1, 1): a3**2 + a4**2,
        (1, 2): a4 * a5,
        (2, 2): a5**2,
    }
    for (i, j), v in expected.items():
        torch.testing.assert_close(cov[..., i, j], v, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(cov[..., j, i], v, rtol=1e-14, atol=1e-15)


def test_full_is_symmetric_psd() -> None:
    _, cov = split_prior(_out(9, seed=1), "full", 3)
    torch.testing.assert_close(cov, cov.transpose(-1, -2), rtol=0, atol=1e-15)
    assert (torch.linalg.eigvalsh(cov) > -1e-12).all()


def test_diagonal_rgb() -> None:
    out = _out(6, seed=2)
    mu, cov = split_prior(out, "diagonal", 3)
    a = out.to(F64)[:, 3:].permute(0, 2, 3, 1)
    assert torch.equal(torch.diagonal(cov, dim1=-2, dim2=-1), a**2)
    assert torch.equal(cov, torch.diag_embed(a**2))
    torch.testing.assert_close(mu, out.to(F64)[:, :3].permute(0, 2, 3, 1), rtol=0, atol=0)


def test_mono_full_equals_diagonal() -> None:
    out = _out(2, seed=3)
    mu_f, cov_f = split_prior(out, "full", 1)
    mu_d, cov_d = split_prior(out, "diagonal", 1)
    assert cov_f.shape == (2, 4, 5, 1, 1)
    assert torch.equal(mu_f, mu_d) and torch.equal(cov_f, cov_d)
    assert torch.equal(cov_f[..., 0, 0], out.to(F64)[:, 1] ** 2)


def test_float64_cast_happens_before_the_maths() -> None:
    """A value whose square underflows in float32 must survive: the cast precedes A·Aᵀ."""
    out = torch.zeros(1, 2, 1, 1, dtype=F64)
    out[0, 1] = 1e-30
    _, cov = split_prior(out, "full", 1)
    assert cov.item() == pytest.approx(1e-60, rel=1e-12)


@pytest.mark.parametrize(
    ("kind", "shape"), [("full", (2, 8, 4, 4)), ("diagonal", (2, 9, 4, 4)), ("full", (9, 4, 4))]
)
def test_shape_errors(kind: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="needs an output of shape"):
        split_prior(torch.zeros(shape), kind, 3)


def test_gradients_reach_every_output_channel() -> None:
    out = _out(9, seed=5, dtype=F64).requires_grad_()
    mu, cov = split_prior(out, "full", 3)
    (mu.sum() + cov.sum()).backward()
    assert out.grad is not None and (out.grad.abs().sum(dim=(0, 2, 3)) > 0).all()


def test_prior_objective_refuses_the_covariance_free_mean_prior() -> None:
    with pytest.raises(ValueError, match=r"method.prior='mean': use one of full, diagonal"):
        PriorObjective("mean")
