"""Networks of Laine et al. 2019: the U-Net (baseline and blind-spot) in 2D and 3D, noise-level estimators, padding."""

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
from ssdn.nets.unet3d import UNet3D, padded_shape3d

__all__ = [
    "CompiledForward",
    "GlobalNoiseLevel",
    "NoiseEstimator",
    "UNet",
    "UNet3D",
    "common_padded_size",
    "crop",
    "level_from_raw",
    "mirror_pad",
    "pad_to_multiple",
    "pad_to_square",
    "padded_shape",
    "padded_shape3d",
    "padded_size",
    "raw_from_level",
]
