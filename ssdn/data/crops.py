"""Which crop: an endless stream of random training crops of the chosen files (``ssdn.data.training_files``).

The authors train on uniform random 256² crops of shuffled epochs (§3.1 of the reference notes). Here every
random choice is a pure function of ``(seed, global sample id)``, so a resumed run continues with exactly the
batches of an uninterrupted one, and the worker count or DDP layout changes only *who* builds a batch, never
*what* it holds: sample ``g`` crops image ``perm_E[g mod n]`` of epoch ``E = g // n``, its corner and
rotation drawn from ``(seed, 1, g)``; element ``e`` of batch ``b`` on rank ``r`` is ``g = b·Bg + r·Bl + e``,
so ranks never share a sample. A packed set (``python -m ssdn.prepare``) is cropped with the same ids, so it
yields the batches of the folder it packs.
With ``data.axes`` the images are the planes of stacks (``ssdn.data.stack_planes``): ``perm_E`` permutes
every (stack, plane) pair, and a crop reads its one plane.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from ssdn.config.schema import DataSettings
from ssdn.data.curriculum import CropSchedule
from ssdn.data.intensity import AUTO_PEAK_PERCENTILE, Intensity, measured_peak, range_used
from ssdn.data.io import ImageDecodeError, load_image, load_native, rgb_to_mono
from ssdn.data.stack_planes import PlaneReader, validation_planes
from ssdn.data.stacks import StackError
from ssdn.data.training_files import SIZE_FILTER, DataWarning, TrainingFiles
from ssdn.noise.base import NoiseModel

__all__ = ["ESTIMATION_IMAGES", "SIZE_FILTER", "DataWarning", "RandomCropStream", "derived_seed"]

ESTIMATION_IMAGES = 32
"""Training images read to estimate the initial noise level, and to measure ``data.peak=auto``."""

SMALL_RANGE = 0.1
"""Share of a 16-bit range below which noisy counts on the default scale get a warning naming data.peak."""

_NOISE_CACHE_BYTES = 1 << 30
"""Per-worker budget for cached fixed-noise images; evicted ones are recomputed bit-identically."""

# Domain tags keep the random streams of the different uses of ``seed`` independent.
_PERMUTATION, _CROP, _FIXED_NOISE = 0, 1, 2


def derived_seed(*key: int) -> int:
    """A 64-bit seed for ``torch.Generator.manual_seed`` from an integer key, e.g. ``(seed, tag, i)``."""
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0])


class RandomCropStream(IterableDataset):
    """Endless batches ``{"clean": uint8 (B, C, c, c), "index": int64 (B,)}`` of random crops (module doc).

    With ``add_noise=False`` batches are ``{"noisy": float32 (B, C, c, c), "index"}`` instead: the crops as
    stored, scaled by ``intensity`` (by default divided by ``2**bit_depth - 1``: [0, 1]).

    With ``fixed_noise`` (the strict one-noisy-copy-per-image protocol), batches also hold ``"noisy"``
    float32 (B, C, c, c) and ``"params"`` float64 (B,): image ``i`` is corrupted once, as a whole, with a CPU
    generator seeded ``derived_seed(seed, 2, i)`` (params drawn first, then the noise), and each crop cuts the
    same window (and rotation) out of the clean and the noisy image.

    The stream cuts the files ``TrainingFiles`` chooses from ``settings.train_dir`` (listing, filters, held-out
    files, subset: all decided, and their problems reported, in the constructor, before training). Its
    ``batch_size`` is the per-rank batch, ``settings.batch_size // world_size``; ``rank``, ``world_size``,
    ``batch_size`` and ``start_batch`` are plain attributes that may be changed before iteration starts.
    With a crop-size curriculum (``ssdn.data.curriculum``), ``b·Bg`` in the sample id is the number of images
    in the batches before ``b``. The stream yields whole batches: use ``DataLoader(stream, batch_size=None)``.
    """

    setting = TrainingFiles.setting
    """The config key that names the source, for messages."""

    def __init__(
        self,
        settings: DataSettings,
        *,
        noise: NoiseModel | None = None,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ) -> None:
        super().__init__()
        if settings.fixed_noise and noise is None:
            raise ValueError(
                "fixed_noise=true needs the noise model: pass noise=... (or set_noise) before setup"
            )
        if world_size < 1:
            raise ValueError(f"world_size={world_size}: at least one rank")
        if errors := settings.errors(
            world_size
        ):  # the batches split over this many ranks: the section's rules
            raise ValueError("; ".join(errors))
        self.settings = settings
        self.crop_size, self.channels, self.seed = settings.crop_size, settings.channels, settings.seed
        #: the stages' plan, shared with the loader workers; None: every batch is crop_size² × batch_size
        self.schedule = (
            CropSchedule(settings.curriculum, settings.crop_size, settings.batch_size)
            if settings.curriculum
            else None
        )
        self.min_side = settings.largest_crop
        self._crop_setting = (
            f"crop_size={self.crop_size}"
            if self.min_side == self.crop_size
            else f"the largest data.curriculum crop_size={self.min_side}"
        )
        self.rotate_aug, self.fixed_noise = settings.rotate_aug, settings.fixed_noise
        self.batch_size = settings.batch_size // world_size
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch
        self.noise = copy.deepcopy(noise).cpu() if noise is not None else None
        self.noisy_only = not settings.add_noise
        self._load = load_native if self.noisy_only else load_image

        chosen = TrainingFiles(
            settings, min_side=self.min_side, crop_setting=self._crop_setting, load=self._load
        )
        self.source, self._pack, self.listed_count = chosen.source, chosen.pack, chosen.listed_count
        self.files, self._images, self._pack_ids = chosen.files, chosen.images, chosen.pack_ids
        self.held_out, self.bit_depth = chosen.held_out, chosen.bit_depth
        self.skipped_files, self.too_small_files = chosen.skipped_files, chosen.too_small_files
        self.size_filtered_count = chosen.size_filtered_count
        self.held_out_stacks = chosen.held_out_stacks
        #: stacks (``data.axes``): the training planes, read on demand; None for 2-D files
        self._planes = PlaneReader(chosen.stacks, chosen.planes) if settings.axes is not None else None

        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()
        self._noisy: OrderedDict[int, tuple[np.ndarray, float]] = OrderedDict()
        self._noisy_bytes = 0
        self._bad: set[int] = set()  # files that failed at crop time (indices into files)
        self._bad_reported: set[int] = set()  # of these, those already announced in a batch (``crop_failed``)
        #: how the noisy crops' stored counts become model units (``ssdn.data.intensity``)
        self.intensity = self._intensity() if self.noisy_only else Intensity.of_depth(8)

    def _intensity(self) -> Intensity:
        """``data.offset`` / ``data.peak`` as the scale, ``auto`` measured on the estimation images; warns when
        16-bit counts on the default scale use less than ``SMALL_RANGE`` of it (the noise floor then binds)."""
        offset, peak = float(self.settings.offset), self.settings.peak
        if peak is not None and peak != "auto":
            return Intensity(offset, float(peak))
        if peak is None and self.bit_depth != 16:
            return Intensity(offset, float(2**self.bit_depth - 1))
        sample = self.estimation_pixels(ESTIMATION_IMAGES)
        if peak == "auto":
            return Intensity(offset, measured_peak(sample, offset, self._source_name()))
        top = float(2**self.bit_depth - 1)
        if (used := range_used(sample, offset)) < SMALL_RANGE * top:
            warnings.warn(
                f"{self.setting}: the 16-bit training images span {used:.0f} of {top:.0f} above data.offset="
                f"{offset:g} ({AUTO_PEAK_PERCENTILE}th percentile): their noise is below the noise model's floor "
                "at this scale; set data.peak=auto (and data.offset to the camera's offset, if it has one)",
                DataWarning,
                stacklevel=3,
            )
        return Intensity(offset, top)

    def _source_name(self) -> str:
        """``data.train_dir`` as a user wrote it: one folder, or the folders joined."""
        source = self.source
        return ", ".join(map(str, source)) if isinstance(source, (list, tuple)) else str(source)

    def load(self, path: Path) -> np.ndarray:
        """One image of this source as the stream reads it (its depth kept when ``add_noise=False``)."""
        if self._pack is not None:
            return self._as_channels(self._pack.image(self._pack.paths.index(path)))
        return self._load(path, self.channels)

    def set_noise(self, noise: NoiseModel) -> None:
        """Replace the noise model (a CPU copy is kept); drops fixed-noise images made with the old one."""
        self.noise = copy.deepcopy(noise).cpu()
        self._noisy.clear()
        self._noisy_bytes = 0

    @property
    def item_count(self) -> int:
        """How many images the samples draw from: the files, or the planes of the stacks."""
        return len(self._planes) if self._planes is not None else len(self.files)

    @property
    def stacked(self) -> bool:
        """True when the images are the planes of stacks (``data.axes``)."""
        return self._planes is not None

    def item_name(self, i: int) -> str:
        """Image ``i`` in messages: its file, or ``stack[Z=3]`` for a plane."""
        return self._planes.label(i) if self._planes is not None else str(self.files[i])

    def held_out_images(self) -> list[np.ndarray]:
        """The held-out validation images (H, W, C) as stored: whole files, or ``val_count`` planes spread over
        the held-out stacks (``ssdn.data.stack_planes.validation_planes``)."""
        if self._planes is None:
            return [self.load(path) for path in self.held_out]
        settings = self.settings
        return validation_planes(self.held_out_stacks, settings.channels_independent, settings.val_count)

    def held_out_crops(self, size: int) -> Tensor:
        """(N, C, size, size) float32: the centre ``size``² of each held-out image, scaled as the training crops."""
        crops = []
        for image in self.held_out_images():
            top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
            crops.append(self.intensity.to_unit(image[top : top + size, left : left + size]))
        return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()

    def estimation_pixels(self, count: int) -> list[np.ndarray]:
        """Up to ``count`` whole training images (H, W, C) to estimate the noise level from: the first ones, or
        for planes of stacks ``count`` spread evenly over every stack's planes (not the first planes of its
        first stack)."""
        n = min(count, self.item_count)
        ids = (
            np.unique(np.linspace(0, self.item_count - 1, n).round().astype(int))
            if self.stacked
            else range(n)
        )
        return [self.pixels(int(i)) for i in ids]

    @property
    def crop_failed_files(self) -> list[str]:
        """Files (or planes) that passed the header scan but failed to decode when cropped: skipped from then on."""
        return [self.item_name(i) for i in sorted(self._bad)]

    def describe(self) -> dict[str, Any]:
        """What was trained on, for checkpoints and logs."""
        planes = self._planes is not None
        return {
            "source": self.source,
            "files": [str(p) for i, p in enumerate(self.files) if planes or i not in self._bad],
            "listed": self.listed_count,
            "skipped_files": [*self.skipped_files, *self.crop_failed_files],
            "crop_failed_files": self.crop_failed_files,
            "too_small_files": list(self.too_small_files),
            "size_filtered": self.size_filtered_count,
            "size_filter": self.settings.size_filter,
            "subset": self.settings.subset,
            "subset_seed": self.settings.subset_seed,
            "seed": self.seed,
            "crop_size": self.crop_size,
            "curriculum": self.schedule.state_dict() if self.schedule is not None else None,
            "rotate_aug": self.rotate_aug,
            "fixed_noise": self.fixed_noise,
            "add_noise": not self.noisy_only,
            "bit_depth": self.bit_depth,
            "held_out": [str(p) for p in self.held_out],
            "channels": self.channels,
            "packed": self._pack.describe() if self._pack is not None else None,
            **(
                {
                    "axes": self.settings.axes,
                    "channels_independent": self.settings.channels_independent,
                    "planes": self.item_count,
                }
                if planes
                else {}
            ),
        }

    # ------------------------------------------------------------------ sampling

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def layout(self, b: int) -> tuple[int, np.ndarray]:
        """The crop size of batch ``b`` and the global sample ids of this rank's share of it."""
        if self.schedule is None:
            crop, per_rank, first = self.crop_size, self.batch_size, b * self.global_batch
        else:
            stage, first = self.schedule.batch(b)
            crop, per_rank = stage.crop_size, stage.batch_size // self.world_size
        return crop, first + self.rank * per_rank + np.arange(per_rank)

    def sample_ids(self, b: int) -> np.ndarray:
        """Global sample ids of this rank's share of batch ``b``."""
        return self.layout(b)[1]

    def _permutation(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng((self.seed, _PERMUTATION, epoch)).permutation(self.item_count)
            self._perms[epoch] = perm
            if len(self._perms) > 2:  # a batch spans at most two epochs
                self._perms.popitem(last=False)
        return perm

    def image_of(self, g: int) -> int:
        """Index (into ``files``, or the planes) of the image that sample ``g`` crops, before any decode fallback."""
        epoch, pos = divmod(int(g), self.item_count)
        return int(self._permutation(epoch)[pos])

    def _image(self, i: int) -> tuple[np.ndarray, int]:
        """Image ``i``, or the next decodable one when its file fails to decode now (one warning per file)."""
        if self._images is not None:
            return self._images[i], i
        if self._pack is not None:
            return self._pack.image(self._pack_ids[i]), i
        n = self.item_count
        for j in ((i + s) % n for s in range(n)):
            if j in self._bad:
                continue
            try:
                image = (
                    self._planes(j) if self._planes is not None else self._load(self.files[j], self.channels)
                )
            except (ImageDecodeError, StackError, OSError) as exc:
                err: Exception = exc
            else:
                if min(image.shape[:2]) >= self.min_side:
                    return image, j
                err = ValueError(f"decoded size {image.shape[1]}x{image.shape[0]} is smaller than the crop")
            self._bad.add(j)
            warnings.warn(
                f"{self.setting}: {self.item_name(j)} failed at crop time ({err}); using the next training image "
                "instead from now on",
                DataWarning,
                stacklevel=2,
            )
        raise RuntimeError(f"{self.setting}: none of the {n} training images can be decoded any more")

    def _fixed_noisy(self, i: int, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The one noisy copy (H, W, C) float32 of image ``i`` and its parameter (cached per worker)."""
        hit = self._noisy.get(i)
        if hit is not None:
            self._noisy.move_to_end(i)
            return hit
        assert self.noise is not None
        gen = torch.Generator().manual_seed(derived_seed(self.seed, _FIXED_NOISE, i))
        params = self.noise.sample_params(1, gen)
        x = torch.from_numpy(np.array(self._as_channels(image))).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            y = self.noise.corrupt(x, params, gen)
        entry = (y[0].permute(1, 2, 0).numpy(), float(params[0]))
        self._noisy[i] = entry
        self._noisy_bytes += entry[0].nbytes
        while self._noisy_bytes > _NOISE_CACHE_BYTES and len(self._noisy) > 1:
            self._noisy_bytes -= self._noisy.popitem(last=False)[1][0].nbytes
        return entry

    def pixels(self, i: int) -> np.ndarray:
        """The whole training image ``i`` (H, W, C) as the crops see it (uint8, or the file's depth)."""
        return self._as_channels(self._image(i)[0])

    def _as_channels(self, pixels: np.ndarray) -> np.ndarray:
        """Packed sets store RGB: mono training converts each window as ``load_image(path, 1)`` would."""
        return pixels if pixels.shape[2] == self.channels else rgb_to_mono(pixels)

    def batch(self, b: int) -> dict[str, Tensor]:
        """This rank's share of global batch ``b``; a pure function of the seed, the files and the layout.

        Each window is copied once, straight into its channels-first slot: numpy's strided copy is ~6x faster
        than ``permute(...).contiguous()`` of a stacked uint8 batch, which otherwise dominates the time.
        """
        c, id_array = self.layout(b)
        ids = id_array.tolist()
        dtype = np.uint16 if self.bit_depth == 16 else np.uint8
        clean = np.empty((len(ids), self.channels, c, c), dtype)
        noisy = np.empty((len(ids), self.channels, c, c), np.float32) if self.fixed_noise else None
        index, params = [], []
        for j, g in enumerate(ids):
            image, i = self._image(self.image_of(g))
            rng = np.random.default_rng((self.seed, _CROP, g))
            top = int(rng.integers(0, image.shape[0] - c + 1))
            left = int(rng.integers(0, image.shape[1] - c + 1))
            k = int(rng.integers(0, 4)) if self.rotate_aug else 0
            window = self._as_channels(image[top : top + c, left : left + c])
            clean[j] = np.rot90(window, k).transpose(2, 0, 1)
            index.append(i)
            if noisy is not None:
                full, p = self._fixed_noisy(i, image)
                noisy[j] = np.rot90(full[top : top + c, left : left + c], k).transpose(2, 0, 1)
                params.append(p)
        index_t = torch.tensor(index, dtype=torch.int64)
        if self.noisy_only:  # the crops are the observations: scaled (data.offset, data.peak), never clipped
            out = {"noisy": torch.from_numpy(self.intensity.to_unit(clean)), "index": index_t}
        else:
            out = {"clean": torch.from_numpy(clean), "index": index_t}
            if noisy is not None:
                out["noisy"] = torch.from_numpy(noisy)
                out["params"] = torch.tensor(params, dtype=torch.float64)
        if new_bad := self._bad - self._bad_reported:
            # A loader worker's copy of the stream found them: the batch carries them to the main process,
            # whose record (describe, in checkpoints) must list them as skipped.
            out["crop_failed"] = torch.tensor(sorted(new_bad), dtype=torch.int64)
            self._bad_reported |= new_bad
        return out

    def mark_crop_failed(self, indices: Iterable[int]) -> None:
        """Record files a loader worker found undecodable at crop time (from a batch's ``crop_failed``)."""
        self._bad.update(int(i) for i in indices)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        if not (0 <= self.rank < self.world_size) or self.start_batch < 0:
            raise ValueError(
                f"invalid stream layout: rank={self.rank}, world_size={self.world_size}, "
                f"start_batch={self.start_batch}"
            )
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for b in itertools.count(self.start_batch + worker, workers):
            yield self.batch(b)
