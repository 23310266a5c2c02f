"""The data settings of a run, checked once: the ``data`` config section plus the run's channels and seed.

Why one frozen object: the data module, the crop stream and the records all read the same settings; passing
them as one value (built once by ``DataSettings.from_config``) keeps them from drifting apart and moves every
check of a setting to one place, before any image is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ssdn.data.curriculum import CropStage, as_stages, curriculum_errors
from ssdn.data.sources import Source
from ssdn.nets.unet import SIDE_MULTIPLE


def _source(value: Any) -> Source | None:
    """A folder or spec as given; a list of them (also a config's list) as a tuple, so settings stay immutable."""
    if value is None or isinstance(value, str | Path):
        return value
    return tuple(v if isinstance(v, Path) else str(v) for v in value)


@dataclass(frozen=True)
class DataSettings:
    """Where the training and validation images come from and how they are cut (``conf/data/*.yaml``).

    ``train_dir`` / ``val_dir``: a folder, a list of folders, a packed set (train only), or ``"skimage"`` /
    ``"skimage:<split>"`` (``ssdn.data.embedded``); ``val_dir=None`` means ``"skimage:val"``, or, with
    ``add_noise=False`` (the training images *are* the noisy observations), the first ``val_count`` training
    files held out as noisy validation crops. ``batch_size`` is
    the **global** batch, split evenly over DDP ranks. ``seed`` drives crops, subsets aside (``subset_seed``),
    and the validation noise. ``curriculum``: earlier stages of smaller (or larger) crops and other batch sizes,
    before ``crop_size``/``batch_size`` run to the end (``ssdn.data.curriculum``); empty: one stage.
    """

    train_dir: Source = "skimage"
    val_dir: Source | None = None
    crop_size: int = 256
    batch_size: int = 4
    num_workers: int = 0
    channels: int = 3
    size_filter: bool = False
    rotate_aug: bool = False
    subset: int | None = None
    subset_seed: int = 0
    recursive: bool = False
    in_memory: bool = True
    fixed_noise: bool = False
    add_noise: bool = True
    seed: int = 0
    val_count: int = 4
    val_size: int = 256
    curriculum: tuple[CropStage, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_dir", _source(self.train_dir))
        object.__setattr__(self, "val_dir", _source(self.val_dir))
        object.__setattr__(self, "curriculum", as_stages(self.curriculum))
        if self.crop_size < 1 or self.batch_size < 1:
            raise ValueError(
                f"data.crop_size and data.batch_size must be >= 1, got {self.crop_size} and {self.batch_size}"
            )
        if self.num_workers < 0 or self.val_count < 0:
            raise ValueError(
                f"data.num_workers and data.val_count must be >= 0, got {self.num_workers} and {self.val_count}"
            )
        if self.fixed_noise and not self.add_noise:
            raise ValueError(
                "data.fixed_noise=true has no meaning with data.add_noise=false (no noise is added: the images "
                "are already noisy); set fixed_noise=false"
            )
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.seed < 0 or self.subset_seed < 0:
            raise ValueError(
                f"seed and data.subset_seed must be >= 0, got {self.seed} and {self.subset_seed}"
            )
        if self.subset is not None and self.subset < 1:
            raise ValueError(
                f"data.subset must be a positive image count or null (all images), got {self.subset}"
            )
        if self.val_size < SIDE_MULTIPLE or self.val_size % SIDE_MULTIPLE:
            raise ValueError(
                f"val_size must be a positive multiple of {SIDE_MULTIPLE} (the blind-spot network needs square "
                f"inputs of that kind), got {self.val_size}"
            )
        if errors := curriculum_errors(self.curriculum):
            raise ValueError("; ".join(errors))

    @property
    def largest_crop(self) -> int:
        """The largest crop any stage cuts: training images must be at least this size."""
        return max([self.crop_size, *(s.crop_size for s in self.curriculum)])

    @classmethod
    def from_config(cls, data: Mapping[str, Any], *, channels: int, seed: int) -> DataSettings:
        """From the run config's ``data`` section (any mapping, e.g. an OmegaConf node) and its channels/seed."""
        known = {f.name for f in fields(cls)} - {"channels", "seed"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown data setting(s) {', '.join('data.' + k for k in unknown)}; the data settings are "
                f"{', '.join(sorted(known))}"
            )
        return cls(**dict(data.items()), channels=int(channels), seed=int(seed))
