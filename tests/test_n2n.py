"""Noise2Noise targets as the authors made them: a second noisy copy with a new draw of the noise parameter."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssdn.config.schema import MethodConfig, Objective, Target
from ssdn.methods import StepBatch, build_method
from ssdn.noise import build_noise

N2N = MethodConfig(name="n2n", blindspot=False, target=Target.second_noisy, objective=Objective.mean)


def _changed_fraction(noisy: Tensor, clean: Tensor) -> Tensor:
    """Per-image fraction of pixels replaced by impulse noise: its realised α (colours never equal 0.5 exactly)."""
    return (noisy != clean).any(dim=1).flatten(1).float().mean(1).double()


def test_n2n_target_draws_a_new_alpha_for_range_noise() -> None:
    noise = build_noise("impulse", [0.0, 1.0])
    method = build_method(N2N, noise, 3, "known")
    n, size = 64, 32
    gen = torch.Generator().manual_seed(0)
    clean = torch.full((n, 3, size, size), 0.5)
    params = noise.sample_params(n, gen)
    noisy = noise.corrupt(clean, params, gen)
    seen: dict[str, Tensor] = {}

    def loss_map(out: Tensor, target: Tensor, *args: object, **kwargs: object) -> Tensor:
        seen["target"] = target
        return (out - target).abs()

    method.objective.loss_map = loss_map  # type: ignore[method-assign]
    batch = StepBatch(clean=clean, noisy=noisy, params=params, generator=gen, progress=0.0)
    method.training_loss(nn.Identity(), noise, batch)

    a_in, a_target = _changed_fraction(noisy, clean), _changed_fraction(seen["target"], clean)
    # the input's realised α follows its drawn params (1024 pixels: binomial std <= 0.016)
    assert torch.allclose(a_in, params, atol=0.07)
    # the target's does not: independent uniform draws differ by 1/3 on average, same-α copies by ~0.02
    assert (a_target - a_in).abs().mean() > 0.2
    corr = torch.corrcoef(torch.stack([a_in, a_target]))[0, 1]
    assert abs(float(corr)) < 0.35  # 64 independent pairs: |r| < 0.35 with probability > 0.99
    assert float(a_target.min()) >= 0.0 and float(a_target.max()) <= 1.0


def test_n2n_fixed_noise_target_is_an_independent_copy_at_the_same_level() -> None:
    noise = build_noise("gaussian", 25)
    method = build_method(N2N, noise, 3, "known")
    gen = torch.Generator().manual_seed(1)
    clean = torch.full((4, 3, 64, 64), 0.5)
    params = noise.sample_params(4, gen)
    noisy = noise.corrupt(clean, params, gen)
    seen: dict[str, Tensor] = {}

    def loss_map(out: Tensor, target: Tensor, *args: object, **kwargs: object) -> Tensor:
        seen["target"] = target
        return (out - target) ** 2

    method.objective.loss_map = loss_map  # type: ignore[method-assign]
    method.training_loss(nn.Identity(), noise, StepBatch(clean, noisy, params, gen, 0.0))
    target_std = (seen["target"] - clean).flatten(1).std(1) * 255
    assert torch.allclose(target_std, torch.full((4,), 25.0), atol=1.0)
    assert not torch.equal(seen["target"], noisy)
