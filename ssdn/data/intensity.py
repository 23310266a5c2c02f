"""The intensity scale: how a noisy file's stored counts map to the model's units, u = (v − offset) / peak.

Why it exists: the noise models and their floors (``ssdn.noise.base.MIN_STD`` = 1e-3) live in [0, 1] units,
which fit 8-bit photos and 16-bit images that fill their range. A camera in a fluorescence microscope at low
light records ~100–300 ADU of 65535 above a fixed offset: divided by 65535 the noise std is ~1e-4, below the
floor, and the offset turns Var = a·(x − offset) + b into a·x + b with b < 0, which the Poisson–Gaussian model
cannot hold. A linear map keeps every noise model in its family (Gaussian σ, Poisson λ and Poisson–Gaussian
(a, b) only rescale), so subtracting the camera's offset (``data.offset``) and dividing by the signal's peak
(``data.peak``, measured with ``auto``) puts such data where the models work. The default (offset 0, peak
2^depth − 1) is the depth's own scale, bit for bit the paper's v / 255. Denoising reads the scale from the
checkpoint and maps results (and the posterior std, × peak) back to the stored units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ssdn.errors import UserError

__all__ = ["AUTO_PEAK_PERCENTILE", "Intensity", "IntensityError", "measured_peak", "range_used"]

AUTO_PEAK_PERCENTILE = 99.9
"""``data.peak=auto``: this percentile of the training pixels above the offset maps to 1. Why not the maximum:
one hot pixel or cosmic ray would set it; why so high: the signal's brightest structures should stay near 1."""

_SAMPLE_VALUES = 1 << 24
"""At most this many pixels (a regular stride over the sample images) enter the percentile: enough for 99.9%."""


class IntensityError(UserError, ValueError):
    """``data.offset`` / ``data.peak`` do not fit the training data."""


@dataclass(frozen=True)
class Intensity:
    """u = (v − offset) / peak, in float32 for the network (float64 where written back)."""

    offset: float
    peak: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.offset) and math.isfinite(self.peak) and self.peak > 0):
            raise ValueError(f"intensity scale needs a finite offset and a positive peak, got {self}")

    @classmethod
    def of_depth(cls, depth: int) -> Intensity:
        """The depth's own scale: v / (2^depth − 1)."""
        return cls(0.0, float(2**depth - 1))

    @classmethod
    def from_record(cls, record: dict[str, Any] | None, depth: int) -> Intensity:
        """The scale a checkpoint's ``ssdn_pixel_scale`` records; the depth's own for records from before it."""
        if not record or "peak" not in record:
            return cls.of_depth(depth)
        return cls(float(record.get("offset", 0.0)), float(record["peak"]))

    def record(self) -> dict[str, float]:
        return {"offset": self.offset, "peak": self.peak}

    def to_unit(self, pixels: np.ndarray) -> np.ndarray:
        """Stored integers (any shape) -> float32 model units; never clipped (below the offset stays negative)."""
        values = pixels.astype(np.float32)
        if self.offset:
            values -= np.float32(self.offset)
        return values / np.float32(self.peak)

    def tensor_to_unit(self, values: torch.Tensor) -> torch.Tensor:
        """:meth:`to_unit` for a tensor of stored integers (a tile), in float32."""
        out = values.float()
        if self.offset:
            out = out - self.offset
        return out / self.peak

    def from_unit(self, values: np.ndarray, dtype: np.dtype[Any] | type) -> np.ndarray:
        """Model units back to the stored ``dtype``: an integer type rounded and clipped to its range; float32
        as they are (a denoised value between two counts, or beyond the type's range, kept)."""
        stored = np.asarray(values, np.float64) * self.peak + self.offset
        if np.dtype(dtype) == np.float32:
            return stored.astype(np.float32)
        return np.clip(np.rint(stored), 0, float(np.iinfo(dtype).max)).astype(dtype)

    def std_to_stored(self, std: np.ndarray) -> np.ndarray:
        """A posterior std in model units as a float32 std in the stored units (the offset does not enter)."""
        return np.asarray(std, np.float32) * np.float32(self.peak)


def range_used(images: Sequence[np.ndarray], offset: float) -> float:
    """The ``AUTO_PEAK_PERCENTILE`` of the pixels above ``offset`` (stored units), over a strided sample."""
    total = sum(image.size for image in images)
    stride = max(1, -(-total // _SAMPLE_VALUES))
    pooled = np.concatenate([image.reshape(-1)[::stride] for image in images]).astype(np.float64)
    return float(np.percentile(pooled, AUTO_PEAK_PERCENTILE)) - offset


def measured_peak(images: Sequence[np.ndarray], offset: float, source: str) -> float:
    """``data.peak=auto``: the training pixels' ``AUTO_PEAK_PERCENTILE`` above ``offset``; refused when the data
    hold no signal above it (the offset is wrong, or the files are empty)."""
    peak = range_used(images, offset)
    if peak <= 0:
        raise IntensityError(
            f"data.peak=auto: the {AUTO_PEAK_PERCENTILE}th percentile of the training pixels in {source} is not "
            f"above data.offset={offset:g}; set data.offset to the camera's offset (the stored value of no light, "
            "below the data) or give data.peak"
        )
    return peak
