"""A training method = network kind + training target + objective (+ optional masking) + noise-level source.

Every row of the paper's tables is one combination; none of them needs to know which noise model is in use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ssdn.config.schema import LevelSourceName, Loss, Masking, MethodConfig, Target
from ssdn.config.schema import Objective as ObjectiveName
from ssdn.errors import UserError
from ssdn.methods.levels import LevelSource, build_level_source
from ssdn.methods.masking import gather_pixels, mask_pixels, stratified_coords
from ssdn.methods.objectives import MeanObjective, Objective, PriorObjective
from ssdn.noise import NoiseModel


@dataclass
class StepBatch:
    """What a method sees in one training step (all on the training device)."""

    clean: Tensor | None  #: (N,C,h,w) float32 in [0, 1]; None for noisy-only data (data.add_noise=false)
    noisy: Tensor  #: (N,C,h,w) float32, never clipped
    params: Tensor  #: (N,) float64, true noise parameters in the paper's units
    generator: torch.Generator  #: for the step's extra draws (N2N target and its parameters, masks)
    progress: float  #: fraction of training done, in [0, 1]


class Method(nn.Module):
    """Composes the pieces of a training method; holds the learned noise-level source if there is one."""

    def __init__(
        self,
        name: str,
        blindspot: bool,
        target: Target,
        objective: Objective,
        level_source: LevelSource | None,
        masking: Masking | None,
        mask_cell: int,
    ) -> None:
        super().__init__()
        if objective.uses_level and level_source is None:
            raise ValueError(f"method {name!r} needs a noise-level source")
        self.name = name
        self.blindspot = blindspot
        self.target = Target(target)
        self.objective = objective
        self.level_source = level_source if objective.uses_level else None
        self.masking = None if masking is None else Masking(masking)
        self.mask_cell = mask_cell

    @property
    def learned_level(self) -> bool:
        return self.level_source is not None and self.level_source.learned

    def out_channels(self, channels: int) -> int:
        return self.objective.out_channels(channels)

    def level(self, noisy: Tensor, params: Tensor, noise: NoiseModel) -> Tensor | None:
        """The noise level (internal units) the objective uses, or None when it uses none."""
        if self.level_source is None:
            return None
        return self.level_source(noisy, params, noise)

    def training_loss(
        self, net: nn.Module, noise: NoiseModel, batch: StepBatch
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar loss for one step, plus values worth logging."""
        level = self.level(batch.noisy, batch.params, noise)
        if self.target is Target.noisy:
            target = batch.noisy
        elif batch.clean is None:  # refused by validate_config before training; kept for direct callers
            raise ValueError(
                f"method {self.name!r} (target={self.target}) needs clean images, but the batch has none "
                "(data.add_noise=false); use a self-supervised method or set data.add_noise=true"
            )
        elif self.target is Target.clean:
            target = batch.clean
        else:
            # A new draw of the per-image parameter, as the authors (noisify called twice): reusing the input's
            # would bias the target wherever the level matters (impulse L0.5 at alpha >~ 0.8).
            target_params = noise.sample_params(batch.clean.shape[0], batch.generator, batch.clean.device)
            target = noise.corrupt(batch.clean, target_params, batch.generator)
        losses = self.pixel_losses(
            net,
            noise,
            batch.noisy,
            target,
            level,
            batch.generator,
            regularise=self.learned_level,
            progress=batch.progress,
        )
        loss = losses.mean()
        logs: dict[str, Tensor] = {}
        if self.learned_level and level is not None:
            # one curve per parameter in the paper's units: "noise_level", or "noise_level_a", "noise_level_b"
            per_name = noise.params_dict(noise.to_params(level.detach()))
            single = len(per_name) == 1
            logs |= {("noise_level" if single else f"noise_level_{k}"): v.mean() for k, v in per_name.items()}
        return loss, logs

    def pixel_losses(
        self,
        net: nn.Module,
        noise: NoiseModel,
        noisy: Tensor,
        target: Tensor,
        level: Tensor | None,
        generator: torch.Generator,
        *,
        regularise: bool,
        progress: float,
    ) -> Tensor:
        """The per-pixel loss of the network on ``noisy`` against ``target``: every pixel (N,H,W), or for a
        masking method the masked pixels only (N,M), masked with ``generator``. Training and the held-out noisy
        validation both score through here; ``regularise`` adds a learned level's regulariser, ``progress``
        anneals the Lp loss."""
        net_in, coords = noisy, None
        if self.masking is not None:
            n, _, h, w = noisy.shape
            coords = stratified_coords(n, h, w, self.mask_cell, generator, noisy.device)
            net_in = mask_pixels(noisy, *coords, self.masking, generator)
        loss_map = self.objective.loss_map(
            net(net_in), target, noise, level, regularise=regularise, progress=progress
        )
        return gather_pixels(loss_map, *coords) if coords is not None else loss_map

    def denoise(
        self, net: nn.Module, noise: NoiseModel, noisy: Tensor, params: Tensor, uncertainty: bool = False
    ) -> dict[str, Tensor]:
        """Denoised outputs for a noisy batch; the first key is the reported one. ``uncertainty`` adds
        ``"posterior_std"``; refused before the network runs for a method without a posterior."""
        if uncertainty and not self.objective.has_posterior:
            raise UserError(
                f"method {self.name!r} predicts a point estimate and has no posterior, so no uncertainty; "
                "use a model trained with the prior objective (e.g. method=ssdn) or drop the uncertainty"
            )
        level = self.level(noisy, params, noise)
        return self.objective.outputs(net(noisy), noisy, noise, level, uncertainty)


def build_method(
    cfg: MethodConfig, noise: NoiseModel, channels: int, level_source: LevelSourceName | str
) -> Method:
    """Build a method from its config section (``conf/method/*.yaml`` on the schema's defaults)."""
    objective: Objective
    if cfg.objective is ObjectiveName.prior:
        objective = PriorObjective(cfg.prior)
    else:
        loss = cfg.loss
        if loss is Loss.auto:
            # Non-zero-mean noise (impulse) makes an L2 fit to noisy targets learn the corrupted mean.
            loss = Loss.l2 if cfg.target is Target.clean or noise.zero_mean else Loss.lp_anneal
        objective = MeanObjective(loss)
    source = build_level_source(level_source, channels, noise.num_params) if objective.uses_level else None
    return Method(
        name=cfg.name,
        blindspot=cfg.blindspot,
        target=cfg.target,
        objective=objective,
        level_source=source,
        masking=cfg.masking,
        mask_cell=cfg.mask_cell,
    )
