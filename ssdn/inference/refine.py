"""Random-replacing refinement (R³; Lee et al., AP-BSN, CVPR 2022): detail back after a pixel-shuffled pass.

A blind-spot net run at pixel-shuffle stride s > 1 (`ssdn.nets.pixel_shuffle`) is safe against spatially
correlated noise but sees the image at 1/s resolution and loses fine detail; at stride 1 it sees full detail but
reproduces correlated noise. R³ puts a fraction p of the noisy pixels back into the first (stride-s) estimate,
which breaks the noise's spatial correlation (the kept noisy pixels are scattered among clean ones), lets the
stride-1 denoiser restore the detail from them, and averages a few such passes to cancel the draw's randomness.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def random_replacing_refinement(
    noisy: Tensor,
    first_estimate: Tensor,
    denoise: Callable[[Tensor], Tensor],
    passes: int,
    replace_prob: float,
    generator: torch.Generator,
) -> Tensor:
    """Mean over ``passes`` of ``denoise(mix)``, ``mix`` = ``first_estimate`` with each pixel (all channels of
    it together) replaced by ``noisy``'s with probability ``replace_prob``, drawn from ``generator`` only.

    ``noisy`` and ``first_estimate``: (N, C, H, W), same shape; ``denoise`` maps such a batch to one of the
    same shape (e.g. the posterior mean of the stride-1 blind-spot net). The replacement masks are drawn on
    ``generator``'s device and moved to the images'.
    """
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be an integer >= 1, got {passes!r}")
    if not 0.0 <= replace_prob <= 1.0:  # also refuses NaN
        raise ValueError(f"replace_prob must be in [0, 1], got {replace_prob!r}")
    if noisy.ndim != 4 or noisy.shape != first_estimate.shape:
        raise ValueError(
            "noisy and first_estimate must be (N, C, H, W) of one shape, "
            f"got {tuple(noisy.shape)} and {tuple(first_estimate.shape)}"
        )
    n, _, h, w = noisy.shape

    def one_pass() -> Tensor:
        draw = torch.rand((n, 1, h, w), generator=generator, device=generator.device, dtype=torch.float64)
        replace = (draw < replace_prob).to(noisy.device)  # [0, 1) draws: p = 0 never, p = 1 always
        return denoise(torch.where(replace, noisy, first_estimate))

    # Running mean: equal outputs (p = 0 or 1 with a deterministic denoiser) average to themselves exactly.
    mean = one_pass()
    for k in range(2, passes + 1):
        mean = mean + (one_pass() - mean) / k
    return mean
