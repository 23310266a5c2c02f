"""Split the blind-spot network output into the Gaussian prior N(μ_x, Σ_x) of each pixel (paper §4.1).

The output is cast to float64 before any maths, as the authors do: Σ_x = A·Aᵀ of raw network values can be
tiny or near-singular, and det / inverse / log-likelihood lose too much precision in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssdn.config.schema import Prior

__all__ = ["as_prior", "prior_channels", "split_prior"]


def as_prior(kind: Prior | str) -> Prior:
    try:
        return Prior(kind)
    except ValueError:
        valid = ", ".join(k.value for k in Prior)
        raise ValueError(f"method.prior={kind!r}: use one of {valid}") from None


def prior_channels(kind: Prior | str, channels: int) -> int:
    """Network output width K: C for μ plus C(C+1)/2 (full A) or C (diagonal)."""
    kind = as_prior(kind)
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if kind is Prior.full:
        return channels + channels * (channels + 1) // 2
    return 2 * channels


def split_prior(out: Tensor, kind: Prior | str, channels: int) -> tuple[Tensor, Tensor]:
    """Network output (N, K, H, W) -> μ_x (N, H, W, C) and Σ_x (N, H, W, C, C), float64.

    A volume's (N, K, D, H, W) gives (N, D, H, W, C) and (N, D, H, W, C, C): the prior is per pixel or voxel.

    Full: A is upper triangular, filled row-major from channels C..K-1, and Σ_x = A·Aᵀ. For RGB this
    reproduces the authors' explicit formulas (Σ00 = a0²+a1²+a2², Σ01 = a1a3+a2a4, …), so pretrained-weight
    semantics match. Diagonal: Σ_x = diag(a²). As the authors: μ_x raw, no positivity constraint on A, no
    epsilon."""
    kind = as_prior(kind)
    k = prior_channels(kind, channels)
    if out.ndim not in (4, 5) or out.shape[1] != k:
        raise ValueError(
            f"{kind.value} prior with {channels} channels needs an output of shape (N, {k}, H, W) or "
            f"(N, {k}, D, H, W), got {tuple(out.shape)}"
        )
    z = out.to(torch.float64).permute(0, *range(2, out.ndim), 1)
    mu, a = z[..., :channels], z[..., channels:]
    if kind is Prior.diagonal:
        return mu, torch.diag_embed(a.square())
    # A as one gather from a with a zero appended, rather than an in-place write into a zero matrix: the same
    # values, and a traced graph (ssdn.export: TorchScript, ONNX) then takes images of any size.
    upper = {(i, j): n for n, (i, j) in enumerate(torch.triu_indices(channels, channels).T.tolist())}
    zero = k - channels
    index = [upper.get((i, j), zero) for i in range(channels) for j in range(channels)]
    padded = torch.cat([a, torch.zeros_like(a[..., :1])], dim=-1)
    tri = padded[..., torch.tensor(index, device=out.device)].unflatten(-1, (channels, channels))
    return mu, tri @ tri.transpose(-1, -2)
