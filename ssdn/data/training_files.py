"""Which files a run trains on: the listing of ``data.train_dir``, its filters, the held-out validation files and
the subset, decided once before training.

Why before training: every problem found here (nothing left after the filters, every file held out, mixed bit
depths) is a mistake in the settings or the data, reported in one line that counts what was found and names the
setting to change, not a failure minutes into a run. Sizes come from the file headers (or a packed set's
index), so filtering a large folder decodes nothing. The crops cut from these files are ``ssdn.data.crops``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ssdn.config.schema import DataSettings
from ssdn.data.io import ImageDecodeError, check_one_bit_depth
from ssdn.data.packed import PackedSet
from ssdn.data.sources import DataSourceError, header_size, open_packed, resolve_sources
from ssdn.data.stack_planes import PlaneRef, list_stacks, open_training_stack, plane_refs
from ssdn.data.stacks import Stack, StackError, collection_bit_depth, volume_indices

SIZE_FILTER = (256, 512)
"""The paper's training-set filter: keep images with 256 <= width, height <= 512 (inclusive)."""

_IN_MEMORY_WARN_BYTES = 4 << 30

#: Decodes one file as training reads it: ``load(path, channels)`` (H, W, C), uint8 or the file's own depth.
Loader = Callable[[Path, int], np.ndarray]


class DataWarning(UserWarning):
    """Something in the data was skipped or looks wrong, but training can go on."""


class TrainingFiles:
    """The files to crop (``files``, sorted as listed; decoded in ``images`` when ``in_memory``) and the record of
    what was left out and why: ``skipped_files`` (undecodable), ``too_small_files`` (smaller than the largest
    crop, ``min_side``), ``size_filtered_count`` (outside ``SIZE_FILTER``) and ``held_out``.

    ``held_out``: with ``add_noise=False`` and no ``val_dir``, the first ``val_count`` files of at least
    ``val_size`` on both sides are noisy validation images, never cropped for training. ``bit_depth``: noisy
    observations keep their file's depth, one for the whole collection (8 otherwise).

    With ``data.axes`` the files are stacks (``ssdn.data.stack_planes``): the same rules apply to the stacks,
    their plane size taken as the image size, ``val_count`` whole stacks held out; ``stacks`` and ``planes``
    then hold the chosen stacks (opened lazily) and their (stack, plane) pairs, the unit that crops draw.
    """

    setting = "train_dir"
    """The config key that names the source, for messages."""

    def __init__(self, settings: DataSettings, *, min_side: int, crop_setting: str, load: Loader) -> None:
        self.settings = settings
        self.min_side, self._crop_setting, self._load = min_side, crop_setting, load
        source = settings.train_dir
        self.source = [str(s) for s in ([source] if isinstance(source, str | Path) else source)]
        #: with ``data.axes``: the chosen stacks (lazy, in ``files`` order) and every training plane of them
        self.stacks: list[Stack] = []
        self.held_out_stacks: list[Stack] = []
        self.planes: list[PlaneRef] = []
        self.pack: PackedSet | None = None
        if settings.axes is not None:
            self._choose_stacks(settings.axes)
            return
        self.pack = open_packed(source, self.setting)
        in_memory = settings.in_memory
        size_of: Callable[[Path], tuple[int, int]]
        if self.pack is None:
            listed = resolve_sources(source, recursive=settings.recursive, setting=self.setting)
            size_of = header_size
        else:
            pack = self.pack
            listed = pack.paths
            size_of = dict(zip(listed, map(pack.size, range(len(listed))), strict=True)).__getitem__
            in_memory = False
        self.listed_count = len(listed)
        self.skipped_files: list[str] = []
        self.too_small_files: list[str] = []
        self.size_filtered_count = 0
        usable, sizes = self._scan(listed, size_of)
        self.held_out: list[Path] = []
        noisy_only = not settings.add_noise
        if noisy_only and settings.val_dir is None and settings.val_count > 0:
            usable, sizes = self._hold_out(usable, sizes)
        self.bit_depth = self._bit_depth(usable) if noisy_only and self.pack is None else 8
        self.files, self.images = self._choose(usable, sizes, in_memory)
        position = {p: i for i, p in enumerate(listed)}
        #: positions of ``files`` in a packed set's index
        self.pack_ids = [position[p] for p in self.files] if self.pack is not None else []

    def _choose_stacks(self, axes: str) -> None:
        """The stack listing's choice, as for 2-D files (filters on the plane size, held-out stacks, one bit
        depth, subset of stacks), then every T/Z plane (and C, when independent) of each chosen stack.

        Validation holds out whole stacks, not planes: neighbouring planes of a stack show the same structures,
        so planes held out beside trained ones would score a memorised image."""
        settings = self.settings
        listed = list_stacks(settings.train_dir, recursive=settings.recursive, setting=self.setting)
        opened = {
            path: open_training_stack(
                path, axes, settings.channels, settings.channels_independent, self.setting
            )
            for path in listed
        }
        self.listed_count = len(listed)
        self.skipped_files, self.too_small_files = [], []
        self.size_filtered_count = 0
        usable, sizes = self._scan(listed, lambda p: (opened[p].size("X"), opened[p].size("Y")))
        self.held_out = []
        if settings.val_count > 0:
            usable, sizes = self._hold_out_stacks(usable, sizes, opened)
        try:
            self.bit_depth = collection_bit_depth([opened[p] for p in [*self.held_out, *usable]])
        except StackError as exc:
            raise DataSourceError(f"{self.setting}: {exc}") from None
        self.files, self.images = self._choose(usable, sizes, in_memory=False)
        self.pack_ids = []
        self.stacks = [opened[p] for p in self.files]
        self.held_out_stacks = [opened[p] for p in self.held_out]
        self.planes = plane_refs(self.stacks, settings.channels_independent)

    def _hold_out_stacks(
        self, usable: list[Path], sizes: list[tuple[int, int]], opened: dict[Path, Stack]
    ) -> tuple[list[Path], list[tuple[int, int]]]:
        """Hold out the first stacks of at least ``val_size``² until they have ``val_count`` planes (for a 3-D
        model, ``crop_depth``-plane slabs: ``_validation_units``).

        Whole stacks, never planes beside trained ones: neighbouring planes of a stack show the same
        structures, so a held-out plane between trained ones would score a memorised image.
        """
        want, held, units = self.settings.val_count, [], 0
        unit = "sub-volume(s)" if self.settings.dims == 3 else "plane(s)"
        for i, (w, h) in enumerate(sizes):
            if units >= want:
                break
            if min(w, h) >= self.settings.val_size:
                held.append(i)
                units += self._validation_units(opened[usable[i]])
        if held and len(held) == len(usable):
            raise DataSourceError(
                f"{self.setting}: validation holds out whole stacks (neighbouring planes show the same "
                f"structures), and data.val_count={want} {unit} would take all {len(usable)} usable stack(s); "
                "add a stack, lower data.val_count, or set data.val_count=0"
            )
        return self._hold_out(usable, sizes, held)

    def _validation_units(self, stack: Stack) -> int:
        """The validation images a held-out stack gives: its planes (2-D), or for a 3-D model its disjoint
        ``crop_depth``-plane slabs of every volume (each T, and C when independent)."""
        independent = self.settings.channels_independent
        if self.settings.dims != 3:
            return len(plane_refs([stack], independent))
        assert self.settings.crop_depth is not None, "a 3-D model's settings have a crop depth"
        return len(volume_indices(stack, independent)) * (stack.size("Z") // self.settings.crop_depth)

    def skip_undecodable(self, path: Path, exc: Exception) -> None:
        self.skipped_files.append(str(path))
        warnings.warn(f"{self.setting}: skipping undecodable image {path}: {exc}", DataWarning, stacklevel=3)

    def _scan(
        self, listed: list[Path], size_of: Callable[[Path], tuple[int, int]]
    ) -> tuple[list[Path], list[tuple[int, int]]]:
        """Header pass: drop unreadable files, the size filter's rejects and images smaller than the crop."""
        lo, hi = SIZE_FILTER
        usable, sizes = [], []
        for path in listed:
            try:
                w, h = size_of(path)
            except ImageDecodeError as exc:
                self.skip_undecodable(path, exc)
                continue
            if self.settings.size_filter and not (lo <= w <= hi and lo <= h <= hi):
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
                stacklevel=4,
            )
        return usable, sizes

    def _hold_out(
        self, usable: list[Path], sizes: list[tuple[int, int]], held: list[int] | None = None
    ) -> tuple[list[Path], list[tuple[int, int]]]:
        """Move the first ``val_count`` files of at least ``val_size``² (or the files ``held``) into
        ``held_out`` (noisy validation)."""
        s, count = self.settings.val_size, self.settings.val_count
        if held is None:
            held = [i for i, (w, h) in enumerate(sizes) if min(w, h) >= s][:count]
        if not held:
            raise DataSourceError(
                f"{self.setting}: none of the {len(usable)} usable image(s) is at least data.val_size={s}² to "
                "hold out for validation (data.add_noise=false with data.val_dir=null); lower data.val_size, "
                "set data.val_count=0, or give data.val_dir a folder of clean images"
            )
        self.held_out = [usable[i] for i in held]
        keep = [i for i in range(len(usable)) if i not in set(held)]
        return [usable[i] for i in keep], [sizes[i] for i in keep]

    def _bit_depth(self, usable: list[Path]) -> int:
        try:
            return check_one_bit_depth([*self.held_out, *usable], self.setting)
        except ValueError as exc:  # the listing's mistake, not a bug: one line (UserError)
            raise DataSourceError(str(exc)) from None

    def _nothing_left(self, what: str) -> DataSourceError:
        lo, hi = SIZE_FILTER
        size_filter = str(self.settings.size_filter).lower()
        held = (
            f", {len(self.held_out)} held out for validation (data.val_count={self.settings.val_count}; "
            "lower it, or give data.val_dir a folder of clean images)"
            if self.held_out
            else ""
        )
        return DataSourceError(
            f"{self.setting}={self.source}: {what}. Of {self.listed_count} file(s) found, "
            f"{len(self.skipped_files)} could not be decoded, {self.size_filtered_count} fall outside the "
            f"size filter {lo}..{hi} px (data.size_filter={size_filter}), {len(self.too_small_files)} are "
            f"smaller than {self._crop_setting}{held}. Add images, lower data.crop_size, disable "
            "data.size_filter or lower data.subset."
        )

    def _warn_if_large(self, sizes: list[tuple[int, int]], count: int) -> None:
        """Warn when ``count`` of the images (mean size from ``sizes``) would take a lot of memory decoded."""
        est = sum(w * h for w, h in sizes) * self.settings.channels * count / len(sizes)
        if est > _IN_MEMORY_WARN_BYTES:
            warnings.warn(
                f"{self.setting}: in_memory=true will hold about {est / 2**30:.1f} GiB of decoded images;"
                " set in_memory=false to decode on demand",
                DataWarning,
                stacklevel=5,
            )

    def _choose(
        self, usable: list[Path], sizes: list[tuple[int, int]], in_memory: bool
    ) -> tuple[list[Path], list[np.ndarray] | None]:
        """Pick the training files (all, or ``subset`` of them) and decode them when ``in_memory``.

        The subset walks a permutation drawn from ``default_rng(subset_seed)`` and keeps the first ``subset``
        files that decode, so smaller subsets with the same seed are nested in larger ones (Table 2 sweeps).
        """
        subset = self.settings.subset
        if not usable:
            raise self._nothing_left("no usable training image")
        order = (
            np.arange(len(usable))
            if subset is None
            else np.random.default_rng(self.settings.subset_seed).permutation(len(usable))
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
                    decoded[i] = self._load(usable[i], self.settings.channels)
            except (ImageDecodeError, OSError) as exc:
                self.skip_undecodable(usable[i], exc)
            else:
                chosen.add(i)
        if not chosen:
            raise self._nothing_left("no usable training image")
        if subset is not None and len(chosen) < subset:
            raise self._nothing_left(f"subset={subset} asks for more images than the {len(chosen)} usable")
        keep = sorted(chosen)
        return [usable[i] for i in keep], ([decoded[i] for i in keep] if in_memory else None)
