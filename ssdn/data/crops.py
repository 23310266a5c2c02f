"""Endless random-crop stream for training: deterministic, resumable, same for any worker count or DDP layout.

The authors train on uniform random 256² crops of shuffled epochs over an in-RAM image set (§3.1 of the
reference notes). This stream does the same, but every random choice is a pure function of
``(seed, global sample id)``, so that

- a run resumed at batch ``k`` (``start_batch = k``) continues with exactly the batches a fresh run yields;
- ``num_workers`` only changes *who* builds a batch, never *what* it holds (worker ``w`` of ``W`` builds
  batches ``start_batch + w, + W, …`` and the DataLoader reads its workers round-robin: same order);
- DDP ranks split each global batch: per-rank batch ``Bl``, world size ``R``, global batch ``Bg = Bl·R``;
  element ``e`` of batch ``b`` on rank ``r`` is global sample ``g = b·Bg + r·Bl + e``. The union over ranks
  of batch ``b`` equals batch ``b`` of one process with batch ``Bg``, and ranks never share a sample.

Sample ``g`` takes image ``perm_E[g mod n]`` with ``E = g // n`` and ``perm_E`` drawn from
``default_rng((seed, 0, E))`` (every image once per epoch); its crop corner (then the rotation k, when
``rotate_aug``) comes from ``default_rng((seed, 1, g))``. The stream yields whole batches, so use it with
``DataLoader(stream, batch_size=None)``.

With a crop-size curriculum (``data.curriculum``) the crop size and batch size of batch ``b`` come from its
stage in ``schedule`` (``ssdn.data.curriculum``), and its first global sample is the number of images in the
batches before it, not ``b·Bg``: ids stay consecutive, so every image is still cropped once per epoch. Images
smaller than the largest crop of any stage are skipped.

A source may also be a packed set (a folder written by ``python -m ssdn.prepare``, detected by its
``manifest.json``): ``files`` is then its images in packed order, and a crop is cut from a memory map of the
shard, so only the crop window is read and copied (no decode per sample). Everything above is unchanged:
the same ids, epochs and crop corners over ``files``, so a packed set and an image folder listing the same
images in the same order yield identical batches.

With ``add_noise=False`` the files are the noisy observations themselves: they are decoded at their own bit
depth (``ssdn.data.io.load_native``; one depth for the whole collection) and batches carry ``"noisy"`` crops
scaled to [0, 1] by that depth, and no ``"clean"``. With ``val_dir`` unset, the first ``val_count`` files
(sorted listing) that are at least ``val_size`` on both sides are held out for validation (``held_out``) and
never cropped for training.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from ssdn.config.schema import DataSettings, curriculum_errors
from ssdn.data.curriculum import CropSchedule
from ssdn.data.io import ImageDecodeError, check_one_bit_depth, load_image, load_native, rgb_to_mono, to_unit
from ssdn.data.sources import header_size, open_packed, resolve_sources
from ssdn.noise.base import NoiseModel

SIZE_FILTER = (256, 512)
"""The paper's training-set filter: keep images with 256 <= width, height <= 512 (inclusive)."""

_NOISE_CACHE_BYTES = 1 << 30
"""Per-worker budget for cached fixed-noise images; evicted ones are recomputed bit-identically."""

_IN_MEMORY_WARN_BYTES = 4 << 30

# Domain tags keep the random streams of the different uses of ``seed`` independent.
_PERMUTATION, _CROP, _FIXED_NOISE = 0, 1, 2


class DataWarning(UserWarning):
    """Something in the data was skipped or looks wrong, but training can go on."""


def derived_seed(*key: int) -> int:
    """A 64-bit seed for ``torch.Generator.manual_seed`` from an integer key, e.g. ``(seed, tag, i)``."""
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0])


class RandomCropStream(IterableDataset):
    """Endless batches ``{"clean": uint8 (B, C, c, c), "index": int64 (B,)}`` of random crops (module doc).

    With ``add_noise=False`` batches are ``{"noisy": float32 (B, C, c, c) in [0, 1], "index"}`` instead: the
    crops as stored, divided by ``2**bit_depth - 1``.

    With ``fixed_noise`` (the strict one-noisy-copy-per-image protocol), batches also hold ``"noisy"``
    float32 (B, C, c, c) and ``"params"`` float64 (B,): image ``i`` is corrupted once, as a whole, with a CPU
    generator seeded ``derived_seed(seed, 2, i)`` (params drawn first, then the noise), and each crop cuts the
    same window (and rotation) out of the clean and the noisy image.

    The stream cuts ``settings.train_dir`` as ``settings`` say (``ssdn.config.schema.DataSettings``); its ``batch_size``
    is the per-rank batch, ``settings.batch_size // world_size``. ``rank``, ``world_size``, ``batch_size``
    and ``start_batch`` are plain attributes that may be changed before iteration starts. Setup (listing,
    filtering, subset, decoding when ``in_memory``) runs in the constructor so that data problems surface
    before training: undecodable files are skipped with one warning each and listed in ``skipped_files``;
    images smaller than the crop are skipped with one warning (``too_small_files``).

    For a packed source the sizes come from its index and nothing is decoded; ``in_memory`` and
    ``recursive`` do not apply (the OS page cache keeps hot shards in RAM, shared by all workers and ranks).
    """

    setting = "train_dir"
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
        if world_size < 1 or settings.batch_size % world_size:
            raise ValueError(
                f"batch_size={settings.batch_size} is the global batch and must be divisible by the world size "
                f"{world_size}; choose a multiple of {world_size}"
            )
        if errors := curriculum_errors(settings.curriculum, world_size):
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

        source = settings.train_dir
        self.source = [str(s) for s in ([source] if isinstance(source, str | Path) else source)]
        self._pack = open_packed(source, self.setting)
        in_memory = settings.in_memory
        size_of: Callable[[Path], tuple[int, int]]
        if self._pack is None:
            listed = resolve_sources(source, recursive=settings.recursive, setting=self.setting)
            size_of = header_size
        else:
            listed = self._pack.paths
            size_of = dict(zip(listed, map(self._pack.size, range(len(listed))), strict=True)).__getitem__
            in_memory = False
        self.listed_count = len(listed)
        self.skipped_files: list[str] = []
        self.too_small_files: list[str] = []
        self.size_filtered_count = 0
        usable, sizes = self._scan(listed, settings.size_filter, size_of)
        self.held_out: list[Path] = []
        if self.noisy_only and settings.val_dir is None and settings.val_count > 0:
            usable, sizes = self._hold_out(usable, sizes)
        self.bit_depth = (
            check_one_bit_depth([*self.held_out, *usable], self.setting)
            if self.noisy_only and self._pack is None
            else 8
        )
        self.files, self._images = self._choose(
            usable, sizes, settings.subset, settings.subset_seed, in_memory, settings.size_filter
        )
        if self._pack is not None:
            position = {p: i for i, p in enumerate(listed)}
            self._pack_ids = [position[p] for p in self.files]

        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()
        self._noisy: OrderedDict[int, tuple[np.ndarray, float]] = OrderedDict()
        self._noisy_bytes = 0
        self._bad: set[int] = set()  # files that failed at crop time (indices into files)
        self._bad_reported: set[int] = set()  # of these, those already announced in a batch (``crop_failed``)

    # ------------------------------------------------------------------ setup

    def _skip_undecodable(self, path: Path, exc: Exception) -> None:
        self.skipped_files.append(str(path))
        warnings.warn(f"{self.setting}: skipping undecodable image {path}: {exc}", DataWarning, stacklevel=3)

    def _scan(
        self, listed: list[Path], size_filter: bool, size_of: Callable[[Path], tuple[int, int]]
    ) -> tuple[list[Path], list[tuple[int, int]]]:
        """Header pass: drop unreadable files, the size filter's rejects and images smaller than the crop."""
        lo, hi = SIZE_FILTER
        usable, sizes = [], []
        for path in listed:
            try:
                w, h = size_of(path)
            except ImageDecodeError as exc:
                self._skip_undecodable(path, exc)
                continue
            if size_filter and not (lo <= w <= hi and lo <= h <= hi):
                self.size_filtered_count += 1
            elif min(w, h) < self.min_side:
                self.too_small_files.append(str(path))
            else:
                usable.append(path)
                sizes.append((w, h))
        if self.too_small_files:
            names = ", ".join(Path(p).name for p in self.too_small_files[:5])
            more = f" and {len(self.too_small_files) - 5} more" if len(self.too_small_files) > 5 else ""
            warnings.warn(
                f"{self.setting}: skipped {len(self.too_small_files)} image(s) smaller than "
                f"{self._crop_setting}: {names}{more}",
                DataWarning,
                stacklevel=3,
            )
        return usable, sizes

    def _hold_out(
        self, usable: list[Path], sizes: list[tuple[int, int]]
    ) -> tuple[list[Path], list[tuple[int, int]]]:
        """Move the first ``val_count`` files of at least ``val_size``² into ``held_out`` (noisy validation)."""
        s, count = self.settings.val_size, self.settings.val_count
        held = [i for i, (w, h) in enumerate(sizes) if min(w, h) >= s][:count]
        if not held:
            raise ValueError(
                f"{self.setting}: no training image of at least val_size={s}² to hold out for validation "
                "(data.add_noise=false with data.val_dir=null); lower val_size, set val_count=0, or give "
                "val_dir a folder of clean images"
            )
        self.held_out = [usable[i] for i in held]
        keep = [i for i in range(len(usable)) if i not in set(held)]
        return [usable[i] for i in keep], [sizes[i] for i in keep]

    def load(self, path: Path) -> np.ndarray:
        """One image of this source as the stream reads it (its depth kept when ``add_noise=False``)."""
        if self._pack is not None:
            return self._as_channels(self._pack.image(self._pack.paths.index(path)))
        return self._load(path, self.channels)

    def _nothing_left(self, size_filter: bool, what: str) -> ValueError:
        lo, hi = SIZE_FILTER
        return ValueError(
            f"{self.setting}={self.source}: {what}. Of {self.listed_count} listed file(s), "
            f"{len(self.skipped_files)} could not be decoded, {self.size_filtered_count} fall outside the "
            f"size filter {lo}..{hi} px (size_filter={str(size_filter).lower()}) and "
            f"{len(self.too_small_files)} are smaller than {self._crop_setting}. Add images, lower "
            "crop_size, disable size_filter or lower subset."
        )

    def _warn_if_large(self, sizes: list[tuple[int, int]], count: int) -> None:
        """Warn when ``count`` of the images (mean size from ``sizes``) would take a lot of memory decoded."""
        est = sum(w * h for w, h in sizes) * self.channels * count / len(sizes)
        if est > _IN_MEMORY_WARN_BYTES:
            warnings.warn(
                f"{self.setting}: in_memory=true will hold about {est / 2**30:.1f} GiB of decoded images;"
                " set in_memory=false to decode on demand",
                DataWarning,
                stacklevel=4,
            )

    def _choose(
        self,
        usable: list[Path],
        sizes: list[tuple[int, int]],
        subset: int | None,
        subset_seed: int,
        in_memory: bool,
        size_filter: bool,
    ) -> tuple[list[Path], list[np.ndarray] | None]:
        """Pick the training files (all, or ``subset`` of them) and decode them when ``in_memory``.

        The subset walks a permutation drawn from ``default_rng(subset_seed)`` and keeps the first ``subset``
        files that decode, so smaller subsets with the same seed are nested in larger ones (Table 2 sweeps).
        """
        if not usable:
            raise self._nothing_left(size_filter, "no usable training image")
        order = (
            np.arange(len(usable))
            if subset is None
            else np.random.default_rng(subset_seed).permutation(len(usable))
        )
        if in_memory:
            self._warn_if_large(sizes, len(usable) if subset is None else min(subset, len(usable)))
        chosen: set[int] = set()
        decoded: dict[int, np.ndarray] = {}  # in_memory only
        for i in order.tolist():
            if subset is not None and len(chosen) == subset:
                break
            try:
                if in_memory:
                    decoded[i] = self._load(usable[i], self.channels)
            except (ImageDecodeError, OSError) as exc:
                self._skip_undecodable(usable[i], exc)
            else:
                chosen.add(i)
        if not chosen:
            raise self._nothing_left(size_filter, "no usable training image")
        if subset is not None and len(chosen) < subset:
            raise self._nothing_left(
                size_filter, f"subset={subset} asks for more images than the {len(chosen)} usable"
            )
        keep = sorted(chosen)
        return [usable[i] for i in keep], ([decoded[i] for i in keep] if in_memory else None)

    def set_noise(self, noise: NoiseModel) -> None:
        """Replace the noise model (a CPU copy is kept); drops fixed-noise images made with the old one."""
        self.noise = copy.deepcopy(noise).cpu()
        self._noisy.clear()
        self._noisy_bytes = 0

    @property
    def crop_failed_files(self) -> list[str]:
        """Files that passed the header scan but failed to decode when cropped: skipped from then on."""
        return [str(self.files[i]) for i in sorted(self._bad)]

    def describe(self) -> dict[str, Any]:
        """What was trained on, for checkpoints and logs."""
        return {
            "source": self.source,
            "files": [str(p) for i, p in enumerate(self.files) if i not in self._bad],
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
            perm = np.random.default_rng((self.seed, _PERMUTATION, epoch)).permutation(len(self.files))
            self._perms[epoch] = perm
            if len(self._perms) > 2:  # a batch spans at most two epochs
                self._perms.popitem(last=False)
        return perm

    def image_of(self, g: int) -> int:
        """Index (into ``files``) of the image that sample ``g`` crops, before any decode fallback."""
        epoch, pos = divmod(int(g), len(self.files))
        return int(self._permutation(epoch)[pos])

    def _image(self, i: int) -> tuple[np.ndarray, int]:
        """Image ``i``, or the next decodable one when its file fails to decode now (one warning per file)."""
        if self._images is not None:
            return self._images[i], i
        if self._pack is not None:
            return self._pack.image(self._pack_ids[i]), i
        n = len(self.files)
        for j in ((i + s) % n for s in range(n)):
            if j in self._bad:
                continue
            try:
                image = self._load(self.files[j], self.channels)
            except (ImageDecodeError, OSError) as exc:
                err: Exception = exc
            else:
                if min(image.shape[:2]) >= self.min_side:
                    return image, j
                err = ValueError(f"decoded size {image.shape[1]}x{image.shape[0]} is smaller than the crop")
            self._bad.add(j)
            warnings.warn(
                f"{self.setting}: {self.files[j]} failed at crop time ({err}); using the next training image "
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
        if self.noisy_only:  # the crops are the observations: scaled by their depth, never clipped
            out = {"noisy": torch.from_numpy(to_unit(clean)), "index": index_t}
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
