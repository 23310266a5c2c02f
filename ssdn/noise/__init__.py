"""Noise models (Gaussian, Poisson, impulse) and a name -> class registry for configs."""

from __future__ import annotations

from ssdn.noise.base import AdditiveGaussianNoise, NoiseModel, ParamValue
from ssdn.noise.gaussian import GaussianNoise
from ssdn.noise.impulse import ImpulseNoise
from ssdn.noise.poisson import PoissonNoise

__all__ = [
    "NOISE_MODELS",
    "AdditiveGaussianNoise",
    "GaussianNoise",
    "ImpulseNoise",
    "NoiseModel",
    "PoissonNoise",
    "build_noise",
]

NOISE_MODELS: dict[str, type[NoiseModel]] = {
    cls.name: cls for cls in (GaussianNoise, PoissonNoise, ImpulseNoise)
}


def build_noise(name: str, value: ParamValue) -> NoiseModel:
    """E.g. ``build_noise("gaussian", 25)`` or ``build_noise("poisson", [5, 50])``."""
    try:
        cls = NOISE_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown noise model {name!r}; valid names: {', '.join(NOISE_MODELS)}") from None
    return cls(value)
