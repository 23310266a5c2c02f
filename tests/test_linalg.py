"""ssdn.noise.linalg: closed-form det / inverse against torch.linalg, exact values and gradients."""

from __future__ import annotations

import pytest
import torch

from ssdn.noise.linalg import det, inv, matvec, quad_form

F64 = torch.float64


def _well_conditioned(shape: tuple[int, ...], c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, c, c, generator=g, dtype=F64) + c * torch.eye(c, dtype=F64)


@pytest.mark.parametrize("c", [1, 2, 3, 4])
def test_det_matches_torch_linalg(c: int) -> None:
    m = _well_conditioned((5, 7), c, seed=c)
    d = det(m)
    assert d.shape == (5, 7) and d.dtype == F64
    torch.testing.assert_close(d, torch.linalg.det(m), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c", [1, 2, 3, 4])
def test_inv_matches_torch_linalg(c: int) -> None:
    m = _well_conditioned((5, 7), c, seed=10 + c)
    mi = inv(m)
    assert mi.shape == m.shape and mi.dtype == F64
    torch.testing.assert_close(mi, torch.linalg.inv(m), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m @ mi, torch.eye(c, dtype=F64).expand_as(m), rtol=0, atol=1e-12)


def test_exact_integer_3x3() -> None:
    """A unimodular integer matrix: the cofactor formulas must give the exact integer inverse."""
    m = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 4.0], [5.0, 6.0, 0.0]], dtype=F64)
    expected = torch.tensor([[-24.0, 18.0, 5.0], [20.0, -15.0, -4.0], [-5.0, 4.0, 1.0]], dtype=F64)
    assert det(m).item() == 1.0
    assert torch.equal(inv(m), expected)


def test_exact_2x2_and_1x1() -> None:
    m = torch.tensor([[4.0, 7.0], [2.0, 6.0]], dtype=F64)
    assert det(m).item() == 10.0
    assert torch.equal(inv(m), torch.tensor([[0.6, -0.7], [-0.2, 0.4]], dtype=F64))
    s = torch.tensor([[[4.0]]], dtype=F64)
    assert det(s).item() == 4.0 and inv(s).item() == 0.25


def test_singular_gives_non_finite_instead_of_raising() -> None:
    m = torch.ones(3, 3, dtype=F64)
    assert det(m).item() == 0.0
    assert not torch.isfinite(inv(m)).all()


def test_quad_form_and_matvec_broadcast() -> None:
    g = torch.Generator().manual_seed(3)
    d = torch.randn(4, 6, 3, generator=g, dtype=F64)
    m = torch.randn(1, 6, 3, 3, generator=g, dtype=F64)
    torch.testing.assert_close(
        quad_form(d, m), torch.einsum("...i,...ij,...j->...", d, m.expand(4, 6, 3, 3), d)
    )
    torch.testing.assert_close(matvec(m, d), torch.einsum("...ij,...j->...i", m.expand(4, 6, 3, 3), d))
    assert (
        quad_form(torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=F64))
        == 18.0
    )


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(2, 3), torch.zeros(4, 2, 3)])
def test_non_square_rejected(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="square"):
        det(bad)
    with pytest.raises(ValueError, match="square"):
        inv(bad)


@pytest.mark.parametrize("c", [1, 2, 3])
def test_gradcheck(c: int) -> None:
    m = _well_conditioned((2,), c, seed=20 + c).requires_grad_()
    assert torch.autograd.gradcheck(det, (m,))
    assert torch.autograd.gradcheck(inv, (m,))
