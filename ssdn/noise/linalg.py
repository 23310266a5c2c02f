"""Closed-form determinant and inverse for the batched tiny matrices of the per-pixel Bayesian maths.

Per-pixel covariances are 1×1 (mono) or 3×3 (RGB). For millions of pixels, explicit cofactor formulas are
faster than batched LAPACK calls, give the same result on every device and stay differentiable. Any other
size falls back to ``torch.linalg``. The dtype is preserved; callers pass float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["det", "inv", "matvec", "quad_form"]


def _check_square(m: Tensor) -> int:
    if m.ndim < 2 or m.shape[-1] != m.shape[-2]:
        raise ValueError(f"expected a batch of square matrices (..., C, C), got shape {tuple(m.shape)}")
    return m.shape[-1]


def _adjugate3(m: Tensor) -> Tensor:
    """Transposed cofactor matrix of (..., 3, 3): adj[i, j] = cofactor[j, i]."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    adj = torch.stack(
        [
            m11 * m22 - m12 * m21,
            m02 * m21 - m01 * m22,
            m01 * m12 - m02 * m11,
            m12 * m20 - m10 * m22,
            m00 * m22 - m02 * m20,
            m02 * m10 - m00 * m12,
            m10 * m21 - m11 * m20,
            m01 * m20 - m00 * m21,
            m00 * m11 - m01 * m10,
        ],
        dim=-1,
    )
    return adj.unflatten(-1, (3, 3))


def _adjugate2(m: Tensor) -> Tensor:
    adj = torch.stack([m[..., 1, 1], -m[..., 0, 1], -m[..., 1, 0], m[..., 0, 0]], dim=-1)
    return adj.unflatten(-1, (2, 2))


def det(m: Tensor) -> Tensor:
    """Determinant of (..., C, C) -> (...); exact cofactor expansion for C ≤ 3."""
    c = _check_square(m)
    if c == 1:
        return m[..., 0, 0]
    if c == 2:
        return m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    if c == 3:
        # Expansion along the first row: det = Σ_j m[0, j] · cofactor[0, j] = Σ_j m[0, j] · adj[j, 0].
        return (m[..., 0, :] * _adjugate3(m)[..., :, 0]).sum(-1)
    return torch.linalg.det(m)


def inv(m: Tensor) -> Tensor:
    """Inverse of (..., C, C) as adjugate / det for C ≤ 3 (no pivoting: callers keep matrices well scaled).

    A singular matrix gives inf/nan entries instead of raising, like the authors' code; the training loop
    skips steps with non-finite gradients.
    """
    c = _check_square(m)
    if c == 1:
        return 1.0 / m
    if c == 2:
        return _adjugate2(m) / det(m)[..., None, None]
    if c == 3:
        adj = _adjugate3(m)
        d = (m[..., 0, :] * adj[..., :, 0]).sum(-1)
        return adj / d[..., None, None]
    return torch.linalg.inv(m)


def matvec(m: Tensor, v: Tensor) -> Tensor:
    """M·v for (..., C, C) and (..., C) with broadcasting of the leading dims -> (..., C)."""
    return (m @ v.unsqueeze(-1)).squeeze(-1)


def quad_form(d: Tensor, m: Tensor) -> Tensor:
    """dᵀ·M·d for (..., C) and (..., C, C) with broadcasting of the leading dims -> (...)."""
    return (d * matvec(m, d)).sum(-1)
