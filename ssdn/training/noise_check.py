"""Before training on noisy images alone: does the paper's blind-spot assumption hold for them?

The blind spot hides only the pixel itself, so it assumes the noise of a pixel is independent of its
neighbours' (paper §2). Camera processing (demosaicing, sharpening, JPEG) breaks that, and a net trained on such
photos learns to hand the noise back. The check measures the noise's spatial correlation on the images the
level is estimated from (``ssdn.noise.correlation``) and says, in the log, whether the run's blind region covers
it: a blind square of side ``method.blind_hole`` covers a correlation reaching (side − 1) / 2 pixels, and
pixel-shuffle sub-images of stride ``method.pd_stride`` put the pixels the net sees that far apart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from ssdn.noise.correlation import estimate_correlation

log = logging.getLogger(__name__)


def covered_extent(blind_hole: int, pd_stride: int) -> int:
    """The largest correlation extent (px) the blind region hides: the hole's half side, or the stride − 1."""
    return max((blind_hole - 1) // 2, pd_stride - 1)


@dataclass(frozen=True)
class NoiseCheck:
    """``warning``: one line when the blind region does not cover the correlation; ``correlated_sigma``: the
    noise's σ (8-bit units) when it is spatially correlated, a better start for a learned Gaussian level than
    Chen's estimate, which takes correlated noise for image structure."""

    warning: str | None = None
    correlated_sigma: float | None = None
    #: what was measured, as plain numbers for the checkpoint (``ssdn_training_noise``): sigma (8-bit), rho_01,
    #: rho_10, extent (px) and channel_correlation; None when nothing could be measured
    measured: dict[str, float] | None = None


def blind_spot_check(images: Sequence[Tensor], blind_hole: int, pd_stride: int) -> NoiseCheck:
    """Measure the noise correlation of noisy (C, H, W) images in [0, 1] and log it; the warning names the remedy
    when the correlation reaches farther than the blind region hides (nothing is claimed when the images are too
    small or too textured to measure)."""
    try:
        corr = estimate_correlation(np.ascontiguousarray(img.permute(1, 2, 0).numpy()) for img in images)
    except ValueError as exc:
        log.info("noise correlation not measured: %s", exc)
        return NoiseCheck()
    rho = f"rho(0,1) = {corr.at(0, 1):.2f}, rho(1,0) = {corr.at(1, 0):.2f}"
    log.info(
        "noise of the training images: sigma = %.3g (8-bit units), %s, extent %d px",
        corr.sigma,
        rho,
        corr.extent,
    )
    sigma = None if corr.independent else corr.sigma
    measured = {
        "sigma": float(corr.sigma),
        "rho_01": float(corr.at(0, 1)),
        "rho_10": float(corr.at(1, 0)),
        "extent": float(corr.extent),
        "channel_correlation": float(corr.channel_correlation),
    }
    if corr.extent <= covered_extent(blind_hole, pd_stride):
        return NoiseCheck(correlated_sigma=sigma, measured=measured)
    return NoiseCheck(
        (
            f"the noise of the training images is spatially correlated over {corr.extent} px ({rho}; independent "
            f"noise has 0), farther than this run's blind region hides (method.blind_hole={blind_hole}, "
            f"method.pd_stride={pd_stride}): the net will learn to hand the noise back. Train with "
            f"method.blind_hole={2 * corr.extent + 1} or method.pd_stride={corr.extent + 1} "
            "(python -m ssdn.inspect FOLDER shows the details)"
        ),
        sigma,
        measured,
    )


def posterior_note(measured: dict[str, float] | None, infer_stride: int = 1) -> str | None:
    """One line for ``--uncertainty`` when the model learnt from noise correlated between pixels: the posterior
    std assumes independent noise, and on the simulated camera it covered fewer errors than it claims with a
    blind square or spot (bench/README.md, camera_compare.py). None for independent or unmeasured noise, and for
    a model that denoises at a pixel-shuffle stride beyond the correlation (``infer_stride`` > extent): its
    sub-images' pixels are nearly independent, and its std was close to honest there."""
    if not measured or measured.get("extent", 0.0) <= 0 or infer_stride > measured["extent"]:
        return None
    return (
        f"note: this model learnt from noise correlated between neighbouring pixels (rho(0,1) = "
        f"{measured['rho_01']:.2f}, rho(1,0) = {measured['rho_10']:.2f}, over {measured['extent']:.0f} px); its "
        "posterior std assumes pixel-independent noise and covered fewer errors than it claims on simulated "
        "camera photos (README, camera photos): read the .std files as a lower bound on the error, or train "
        "with method.pd_stride, whose std was close to honest there"
    )
