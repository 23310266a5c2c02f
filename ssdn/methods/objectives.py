"""What the network predicts and how it is scored: a Gaussian prior fitted by the noise model's marginal
likelihood (the paper's method and its diagonal ablation), or a point estimate fitted by a regression loss
(μ only, N2C, N2N, masking without the posterior)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from ssdn.config.schema import REGRESSION_LOSSES, Loss, Prior
from ssdn.errors import UserError
from ssdn.eval.results import UNCERTAINTY_KEY
from ssdn.methods.prior import as_prior, prior_channels, split_prior
from ssdn.methods.schedule import lp_exponent
from ssdn.noise import NoiseModel


def _channels_last(x: Tensor) -> Tensor:
    """(N, C, H, W) or (N, C, D, H, W) -> channel vector last, float64: the noise models act per pixel/voxel."""
    return x.permute(0, *range(2, x.ndim), 1).to(torch.float64)  # explicit dims: ONNX takes no negative perm


def _channels_first(x: Tensor) -> Tensor:
    return x.permute(0, x.ndim - 1, *range(1, x.ndim - 1)).to(torch.float32).contiguous()


class Objective(nn.Module, ABC):
    """Maps raw network outputs to a per-pixel training loss and to denoised images."""

    #: Whether the objective consumes a noise level (and so a level source).
    uses_level: bool = False
    #: Whether it has a posterior, and so a per-pixel uncertainty (``outputs(..., uncertainty=True)``).
    has_posterior: bool = False

    @property
    def stationary_loss(self) -> bool:
        """Whether the loss keeps its form all through training, so that its values at different steps compare
        (``ssdn.training.divergence``); an annealed loss changes scale as it anneals."""
        return True

    @abstractmethod
    def out_channels(self, channels: int) -> int:
        """Network output width for images with ``channels`` colour channels."""

    @abstractmethod
    def loss_map(
        self,
        out: Tensor,
        target: Tensor,
        noise: NoiseModel,
        level: Tensor | None,
        *,
        regularise: bool,
        progress: float,
    ) -> Tensor:
        """Per-pixel loss ``(N, H, W)`` of raw outputs ``out`` against ``target`` (N,C,H,W); ``regularise``
        adds the learned level's regulariser, ``progress`` (fraction of training done) anneals a loss. Volumes
        (N, C, D, H, W) give (N, D, H, W): every objective acts on each voxel's channel vector."""

    @abstractmethod
    def outputs(
        self, out: Tensor, noisy: Tensor, noise: NoiseModel, level: Tensor | None, uncertainty: bool = False
    ) -> dict[str, Tensor]:
        """Denoised images (N,C,H,W) float32; the first key is the one reported. ``uncertainty`` adds
        ``"posterior_std"`` (N,C,H,W), the posterior std in pixel units, which is not an image to score."""


class PriorObjective(Objective):
    """Gaussian prior N(μ_x, Σ_x) per pixel; training maximises p(y) through the noise model (Eq. 4, 7, 8),
    testing returns the posterior mean (Eq. 6, 10) and μ_x."""

    uses_level = True
    has_posterior = True

    def __init__(self, kind: Prior | str = Prior.full) -> None:
        super().__init__()
        self.kind = as_prior(kind)

    def out_channels(self, channels: int) -> int:
        return prior_channels(self.kind, channels)

    def _split(self, out: Tensor, channels: int) -> tuple[Tensor, Tensor]:
        return split_prior(out, self.kind, channels)

    def loss_map(
        self,
        out: Tensor,
        target: Tensor,
        noise: NoiseModel,
        level: Tensor | None,
        *,
        regularise: bool,
        progress: float,  # noqa: ARG002 -- the Objective interface
    ) -> Tensor:
        assert level is not None, "the prior objective needs a noise level"
        channels = target.shape[1]
        with torch.autocast(device_type=out.device.type, enabled=False):
            mu, cov = self._split(out, channels)
            lvl = noise.pixel_level(level, out.ndim - 2)
            loss = noise.nll(_channels_last(target), mu, cov, lvl)
            if regularise:
                loss = loss + noise.regulariser(mu, lvl)
        return loss

    def outputs(
        self, out: Tensor, noisy: Tensor, noise: NoiseModel, level: Tensor | None, uncertainty: bool = False
    ) -> dict[str, Tensor]:
        assert level is not None, "the prior objective needs a noise level"
        channels = noisy.shape[1]
        with torch.autocast(device_type=out.device.type, enabled=False):
            mu, cov = self._split(out, channels)
            y, lvl = _channels_last(noisy), noise.pixel_level(level, out.ndim - 2)
            result = {
                "pme": _channels_first(noise.posterior_mean(y, mu, cov, lvl)),
                "mu": _channels_first(mu),
            }
            if uncertainty:
                result[UNCERTAINTY_KEY] = _channels_first(noise.posterior_std(y, mu, cov, lvl))
        return result


class MeanObjective(Objective):
    """A point estimate of the clean value used directly as the output.

    ``lp_anneal`` is the paper's loss for N2N and μ-only under impulse noise: ``(|x − t| + 1e-8)^L`` with L
    annealed from 2 to 0.5 over the first 75% of training.
    """

    def __init__(self, loss: Loss | str = Loss.l2) -> None:
        super().__init__()
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"method.loss must be one of {REGRESSION_LOSSES}, got {loss!r}")
        self.loss = Loss(loss)

    @property
    def stationary_loss(self) -> bool:
        return self.loss is not Loss.lp_anneal

    def out_channels(self, channels: int) -> int:
        return channels

    def loss_map(
        self,
        out: Tensor,
        target: Tensor,
        noise: NoiseModel,  # noqa: ARG002 -- the Objective interface
        level: Tensor | None,  # noqa: ARG002 -- the Objective interface
        *,
        regularise: bool,  # noqa: ARG002 -- the Objective interface
        progress: float,
    ) -> Tensor:
        with torch.autocast(device_type=out.device.type, enabled=False):
            diff = out.float() - target.float()
            if self.loss is Loss.lp_anneal:
                p = lp_exponent(progress, 1.0)
                return ((diff.abs() + 1e-8) ** p).mean(dim=1)
            return diff.square().mean(dim=1)

    def outputs(
        self,
        out: Tensor,
        noisy: Tensor,  # noqa: ARG002 -- the Objective interface
        noise: NoiseModel,  # noqa: ARG002 -- the Objective interface
        level: Tensor | None,  # noqa: ARG002 -- the Objective interface
        uncertainty: bool = False,
    ) -> dict[str, Tensor]:
        if uncertainty:
            raise UserError(
                "a point-estimate (objective 'mean') model has no posterior, so no uncertainty; "
                "use a model trained with the prior objective (e.g. method=ssdn) or drop the uncertainty"
            )
        return {"out": out.float()}
