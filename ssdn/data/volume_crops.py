"""Training volumes of microscopy stacks for a 3-D model (``model.dims=3``): random ZYX sub-volumes of
``data.crop_depth`` × ``data.crop_size``² cut from every T (and every channel alone when
``data.channels_independent``) of every chosen stack.

The unit a sample draws is one volume (a stack at one T / C position), permuted per epoch as the 2-D stream
permutes files or planes, so every stack is reached; the corner, rotation and flips of sample ``g`` come from
``(seed, 1, g)``, so a resumed run or another loader layout cuts the same volumes (``ssdn.data.crops``). A crop
reads only its planes, and of them only its window, from the file (``Stack.take``). Validation holds out whole
stacks, as for 2-D training (``ssdn.data.training_files``); ``val_count`` then counts ``crop_depth``-plane
sub-volumes of them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssdn.config.schema import DataSettings
from ssdn.data.crops import _CROP, RandomCropStream
from ssdn.data.sources import DataSourceError
from ssdn.data.stacks import Stack, StackError, take_volume, volume_indices
from ssdn.data.training_files import DataWarning
from ssdn.noise.base import NoiseModel

__all__ = ["RandomVolumeStream", "VolumeRef", "volume_refs"]


@dataclass(frozen=True)
class VolumeRef:
    """One training volume: ``stack`` (index into the chosen stacks) and its T / C positions (may be empty)."""

    stack: int
    index: tuple[tuple[str, int], ...]

    def label(self, path: Path) -> str:
        """``path[T=1]`` (or ``path`` for a ZYX stack): the volume named in messages."""
        return f"{path}[{','.join(f'{a}={i}' for a, i in self.index)}]" if self.index else str(path)


def volume_refs(stacks: list[Stack], independent: bool) -> list[VolumeRef]:
    """Every volume of every stack, stacks in order, volumes in file order."""
    return [
        VolumeRef(i, tuple(index.items()))
        for i, stack in enumerate(stacks)
        for index in volume_indices(stack, independent)
    ]


class RandomVolumeStream(RandomCropStream):
    """Endless batches ``{"noisy": float32 (B, C, d, c, c) scaled by ``intensity``, "index": int64 (B,)}`` of random
    sub-volumes (module doc); ``index`` names the volume (``volumes``). ``rotate_aug`` adds a random in-plane
    quarter turn, an X mirror and a Z flip per crop (all 16 orientations that keep Z the depth axis).

    The files, held-out stacks and bit depth are the 2-D stream's choice (``TrainingFiles``); a stack with
    fewer Z planes than ``crop_depth`` is refused, naming it; one whose file fails to read at crop time is
    skipped from then on with a warning, as the 2-D stream skips files.
    """

    def __init__(
        self,
        settings: DataSettings,
        *,
        noise: NoiseModel | None = None,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ) -> None:
        if settings.dims != 3 or settings.crop_depth is None or settings.axes is None:
            raise ValueError(
                "RandomVolumeStream needs settings of a 3-D model (model.dims=3, data.crop_depth)"
            )
        super().__init__(settings, noise=noise, rank=rank, world_size=world_size, start_batch=start_batch)
        assert self._planes is not None, "stacks (data.axes) always have a plane reader"
        self.crop_depth = settings.crop_depth
        self.stacks: list[Stack] = list(self._planes.stacks)
        for stack in [*self.stacks, *self.held_out_stacks]:
            if stack.size("Z") < self.crop_depth:
                raise DataSourceError(
                    f"{self.setting}: {stack.path} has {stack.size('Z')} Z plane(s), fewer than "
                    f"data.crop_depth={self.crop_depth}; lower data.crop_depth or leave the stack out"
                )
        independent = settings.channels_independent
        #: every training volume, the unit the samples draw
        self.volumes = volume_refs(self.stacks, independent)
        self.held_out_volumes = volume_refs(self.held_out_stacks, independent)

    @property
    def item_count(self) -> int:
        return len(self.volumes)

    def item_name(self, i: int) -> str:
        ref = self.volumes[i]
        return ref.label(self.stacks[ref.stack].path or Path("?"))

    def describe(self) -> dict[str, Any]:
        assert self._planes is not None
        return super().describe() | {
            "planes": len(self._planes),
            "dims": 3,
            "crop_depth": self.crop_depth,
            "volumes": self.item_count,
        }

    def estimation_pixels(self, count: int) -> list[np.ndarray]:
        """``count`` planes spread over every plane of the training stacks: the noise is estimated per plane."""
        assert self._planes is not None
        planes = self._planes
        n = min(count, len(planes))
        ids = np.unique(np.linspace(0, len(planes) - 1, n).round().astype(int))
        return [planes(int(i)) for i in ids]

    def held_out_crops(self, size: int) -> Tensor:
        """(V, C, crop_depth, size, size) float32: ``val_count`` validation sub-volumes spread evenly (the centres
        of equal runs, as for planes) over the disjoint ``crop_depth``-plane slabs of every held-out volume (the
        slabs centred in Z, each cut at the centre ``size``² of its planes)."""
        d = self.crop_depth
        slabs = []
        for ref in self.held_out_volumes:
            z_size = self.held_out_stacks[ref.stack].size("Z")
            first = (z_size - z_size // d * d) // 2
            slabs += [(ref, first + k * d) for k in range(z_size // d)]
        m = min(self.settings.val_count, len(slabs))
        crops = []
        for k in ((np.arange(m) + 0.5) * len(slabs) / m).astype(int).tolist():
            ref, z = slabs[k]
            stack = self.held_out_stacks[ref.stack]
            y, x = ((stack.size(a) - size) // 2 for a in "YX")
            window = {"Z": slice(z, z + d), "Y": slice(y, y + size), "X": slice(x, x + size)}
            crops.append(self.intensity.to_unit(take_volume(stack, dict(ref.index), window)))
        return torch.from_numpy(np.stack(crops))

    def _crop(self, i: int, g: int, c: int) -> tuple[np.ndarray, int]:
        """Sample ``g``'s sub-volume (C, d, c, c) of volume ``i``, or of the next one that reads when ``i``'s file
        fails now (one warning per volume, then skipped as the 2-D stream skips files); its corner, turn and flips
        drawn from ``(seed, 1, g)``."""
        d, n = self.crop_depth, self.item_count
        for j in ((i + s) % n for s in range(n)):
            if j in self._bad:
                continue
            ref = self.volumes[j]
            stack = self.stacks[ref.stack]
            rng = np.random.default_rng((self.seed, _CROP, g))
            z0, top, left = (
                int(rng.integers(0, stack.size(a) - m + 1)) for a, m in zip("ZYX", (d, c, c), strict=True)
            )
            window = {"Z": slice(z0, z0 + d), "Y": slice(top, top + c), "X": slice(left, left + c)}
            try:
                vol = take_volume(stack, dict(ref.index), window)
            except (StackError, OSError, ValueError) as exc:
                self._bad.add(j)
                warnings.warn(
                    f"{self.setting}: {self.item_name(j)} failed at crop time ({exc}); using the next training "
                    "volume instead from now on",
                    DataWarning,
                    stacklevel=3,
                )
                continue
            if self.rotate_aug:
                k, mirror, zflip = (int(v) for v in rng.integers(0, (4, 2, 2)))
                vol = np.rot90(vol, k, axes=(2, 3))
                vol = vol[..., ::-1] if mirror else vol
                vol = vol[:, ::-1] if zflip else vol
            return vol, j
        raise RuntimeError(f"{self.setting}: none of the {n} training volumes can be read any more")

    def batch(self, b: int) -> dict[str, Tensor]:
        """This rank's share of global batch ``b``: a pure function of the seed, the stacks and the layout."""
        c, id_array = self.layout(b)
        dtype = np.uint16 if self.bit_depth == 16 else np.uint8
        out = np.empty((len(id_array), self.channels, self.crop_depth, c, c), dtype)
        index = []
        for j, g in enumerate(id_array.tolist()):
            out[j], i = self._crop(self.image_of(g), g, c)
            index.append(i)
        # the crops are the observations: scaled (data.offset, data.peak), never clipped
        batch = {
            "noisy": torch.from_numpy(self.intensity.to_unit(out)),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if (
            new_bad := self._bad - self._bad_reported
        ):  # a loader worker's finding, for the main process's record
            batch["crop_failed"] = torch.tensor(sorted(new_bad), dtype=torch.int64)
            self._bad_reported |= new_bad
        return batch
