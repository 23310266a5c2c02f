"""Which noise level a trained model denoises a user's image with: ``--param`` (paper units), ``auto`` (the
noise model's classical estimator per image), or what the model learned.

A model trained with the level known cannot guess it, so it needs ``--param``. A model that learned its level
uses what it learned; given ``--param`` anyway, it uses the given level instead and says so: the network
predicts the clean-image prior whatever the level, which enters only the posterior (the paper's "σ known"
rows run the same network with the true level), so a level the user measured is a meaningful choice, and
ignoring it silently would not be.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ssdn.errors import UserError
from ssdn.methods.levels import KnownLevel
from ssdn.training.module import DenoiserModule

AUTO_CROP = 1024
"""``--param auto`` estimates on the central AUTO_CROP² of an image: enough patches, bounded time."""


class ParamError(UserError, ValueError):
    """``--param`` cannot be used with this model: missing, malformed, or outside the noise model's domain."""


def parse_param(text: str | None) -> list[float] | str | None:
    """``--param``: None, ``"auto"``, or the comma-separated numbers (validated later against the model)."""
    if text is None or text == "auto":
        return text
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ParamError(
            f"--param {text!r}: give numbers in the paper's units (several as a,b) or 'auto'"
        ) from None


def resolve_params(
    module: DenoiserModule, param: Sequence[float] | str | None, pixels: Tensor | None = None
) -> Tensor:
    """One image's params (1,) or (1, P) float64 in paper units: ``param`` checked against the noise model's
    domain, ``"auto"`` estimated from ``pixels`` (C, H, W) in [0, 1], or the configured value when None."""
    noise = module.noise
    if param is None:
        return noise.sample_params(1, torch.Generator().manual_seed(0))
    if param == "auto":
        if pixels is None:
            raise ValueError("--param auto needs the image to estimate its level from")
        h, w = pixels.shape[1:]
        top, left = max((h - AUTO_CROP) // 2, 0), max((w - AUTO_CROP) // 2, 0)
        try:
            estimate = noise.estimate_params([pixels[:, top : top + AUTO_CROP, left : left + AUTO_CROP]])
        except ValueError as exc:
            raise ParamError(f"--param auto: {exc}; pass the level with --param") from None
        values = estimate.reshape(-1).tolist()
    else:
        values = [float(v) for v in param]
    noise.check_params(values)
    return torch.tensor([values[0]] if len(values) == 1 else [values], dtype=torch.float64)


def check_level_given(module: DenoiserModule, param: Sequence[float] | str | None) -> None:
    """A model trained with the level known cannot guess it: ``--param`` (a value or ``auto``) is required."""
    method = module.method
    if method.level_source is not None and not method.learned_level and param is None:
        names = ",".join(module.noise.param_names)
        raise ParamError(
            f"this model was trained with a known noise level; pass --param (its {names} in the paper's units) "
            "or --param auto to estimate it per image"
        )


def use_given_level(module: DenoiserModule, param: Sequence[float] | str | None) -> str | None:
    """Make a model that learned its level use ``--param`` instead (see the module docstring); returns the
    note to print, or None when nothing changed (no ``--param``, or a model that takes it anyway)."""
    method = module.method
    if param is None or not method.learned_level:
        return None
    source = method.level_source
    assert source is not None, "a learned level has a source"
    method.level_source = KnownLevel()
    given = "estimated per image (auto)" if param == "auto" else "given"
    return (
        f"--param: this model learned its noise level ({source.name}); using the level {given} instead, "
        "as asked (leave out --param to use the learned one)"
    )
