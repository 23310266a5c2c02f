"""Noise models (Gaussian, Poisson, impulse, Poisson–Gaussian, channel-correlated Gaussian) and a name -> class
registry for configs."""

from __future__ import annotations

from ssdn.noise.base import AdditiveGaussianNoise, NoiseModel, NoiseParamError, ParamValue
from ssdn.noise.gaussian import GaussianNoise
from ssdn.noise.gaussian_channels import GaussianChannelsNoise
from ssdn.noise.impulse import ImpulseNoise
from ssdn.noise.poisson import PoissonNoise
from ssdn.noise.poisson_gaussian import PoissonGaussianNoise

__all__ = [
    "NOISE_MODELS",
    "AdditiveGaussianNoise",
    "GaussianChannelsNoise",
    "GaussianNoise",
    "ImpulseNoise",
    "NoiseModel",
    "NoiseParamError",
    "PoissonGaussianNoise",
    "PoissonNoise",
    "build_noise",
]

NOISE_MODELS: dict[str, type[NoiseModel]] = {
    cls.name: cls
    for cls in (GaussianNoise, PoissonNoise, ImpulseNoise, PoissonGaussianNoise, GaussianChannelsNoise)
}


def build_noise(name: str, value: ParamValue) -> NoiseModel:
    """E.g. ``build_noise("gaussian", 25)``, ``build_noise("poisson", [5, 50])`` or
    ``build_noise("poisson_gaussian", {"a": 0.01, "b": [1e-4, 4e-4]})``."""
    try:
        cls = NOISE_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown noise model {name!r}; valid names: {', '.join(NOISE_MODELS)}") from None
    return cls(value)
