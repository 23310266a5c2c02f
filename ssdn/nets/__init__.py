"""Networks of Laine et al. 2019: the U-Net (baseline and blind-spot), noise-level estimators, padding."""

from ssdn.nets.compiled import CompiledForward
from ssdn.nets.estimator import GlobalNoiseLevel, NoiseEstimator, level_from_raw, raw_from_level
from ssdn.nets.padding import (
    common_padded_size,
    crop,
    mirror_pad,
    pad_to_multiple,
    pad_to_square,
    padded_shape,
    padded_size,
)
from ssdn.nets.unet import UNet

__all__ = [
    "CompiledForward",
    "GlobalNoiseLevel",
    "NoiseEstimator",
    "UNet",
    "common_padded_size",
    "crop",
    "level_from_raw",
    "mirror_pad",
    "pad_to_multiple",
    "pad_to_square",
    "padded_shape",
    "padded_size",
    "raw_from_level",
]
