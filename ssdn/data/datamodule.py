"""Lightning data module: the random-crop training stream plus a small fixed validation set.

Why a fixed validation set: the first ``val_count`` images of the sorted ``val_dir`` at least ``val_size`` on
both sides, centre-cropped to ``val_size``² (a multiple of 32, as the network needs) and corrupted **once** in
``setup`` by a CPU generator seeded ``seed + VAL_SEED_OFFSET``, so validation PSNR compares like with like
across steps, runs and devices; smaller images are skipped, not padded, so PSNR sees real pixels only.
Without clean images the held-out training files are validated as stored, scored by the self-supervised
loss; with ``add_noise=false`` a ``val_dir`` holds real noisy/clean pairs (``ssdn.data.pairs``, the SIDD layout),
scored by PSNR as they are. Training resumes exactly: the stream starts at the restored ``batches_seen``
(``ssdn.data.crops``).
The final protocol evaluation lives in ``ssdn.eval``.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ssdn.config.schema import DataSettings
from ssdn.data.crops import DataWarning, RandomCropStream
from ssdn.data.curriculum import CropSchedule
from ssdn.data.intensity import Intensity
from ssdn.data.io import ImageDecodeError, bit_depth, load_image, load_native
from ssdn.data.pairs import PairsError, find_pairs
from ssdn.data.sources import resolve_sources
from ssdn.data.volume_crops import RandomVolumeStream
from ssdn.noise.base import NoiseModel

VAL_SEED_OFFSET = 1
ESTIMATE_SEED_OFFSET = 2
"""Seed offset of the synthetic noise drawn to estimate the initial level from clean training images."""
DEFAULT_VAL_SOURCE = "skimage:val"
PREFETCH = 2
"""Batches each loader worker builds ahead (DataLoader's ``prefetch_factor``)."""


class _ValSet(Dataset):
    """The pre-noised validation tensors, one dict per image."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["index"])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


class DenoisingDataModule(L.LightningDataModule):
    """Training crops + fixed validation set, as ``settings`` say (``RunConfig.data_settings`` builds them).

    ``noise`` (here or via ``set_noise``) is needed by validation and fixed_noise. ``batch_size`` of the
    settings is the **global** batch, split evenly over DDP ranks.
    """

    def __init__(self, settings: DataSettings, *, noise: NoiseModel | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.noise: NoiseModel | None = None
        self.train_stream: RandomCropStream | None = None
        self.val_files: list[Path] = []
        self._val: dict[str, Tensor] | None = None
        if noise is not None:
            self.set_noise(noise)

    # ------------------------------------------------------------------ configuration

    def set_noise(self, noise: NoiseModel) -> None:
        """Use ``noise`` (a CPU copy, so moving the model to a GPU later does not affect the data)."""
        self.noise = copy.deepcopy(noise).cpu()
        self._val = None  # re-drawn with the new model at the next setup
        if self.train_stream is not None and self.settings.fixed_noise:
            self.train_stream.set_noise(self.noise)

    def _layout(self) -> tuple[int, int, int]:
        """(rank, world size, per-rank batch) from the attached trainer, else a single process; the crop stream
        refuses a global batch the world size does not divide."""
        rank, world = (
            (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        )
        return rank, world, self.settings.batch_size // world

    @property
    def batch_size(self) -> int:
        """The global batch (all ranks): the LightningModule counts training images with it."""
        return self.settings.batch_size

    @property
    def crop_schedule(self) -> CropSchedule | None:
        """The crop-size curriculum's plan (``data.curriculum``), after setup; None without one."""
        return self.train_stream.schedule if self.train_stream is not None else None

    @property
    def train_files(self) -> list[Path]:
        return self.train_stream.files if self.train_stream is not None else []

    @property
    def skipped_files(self) -> list[str]:
        return self.train_stream.skipped_files if self.train_stream is not None else []

    # ------------------------------------------------------------------ setup

    def setup(self, stage: str | None = None) -> None:
        """Build the training stream (once) and the noisy validation set; data errors surface here."""
        if stage in (None, "fit"):
            self._training_stream()
        if stage in (None, "fit", "validate") and self._val is None and self.settings.val_count > 0:
            self._val = self._build_val()
            if self.train_stream is not None:
                overlap = {p.resolve() for p in self.val_files} & {p.resolve() for p in self.train_files}
                if overlap:
                    warnings.warn(
                        f"{len(overlap)} validation image(s) are also training images (e.g. "
                        f"{min(overlap)}); choose disjoint train_dir and val_dir",
                        DataWarning,
                        stacklevel=2,
                    )

    def _training_stream(self) -> RandomCropStream:
        """The training stream, built on first use (validation may need its held-out files or its scale)."""
        if self.train_stream is None:
            rank, world, _ = self._layout()
            self.train_stream = self._stream(rank, world)
        return self.train_stream

    def _stream(self, rank: int, world: int) -> RandomCropStream:
        """The training stream: crops of images or planes, or sub-volumes of stacks for a 3-D model."""
        kind = RandomVolumeStream if self.settings.dims == 3 else RandomCropStream
        return kind(self.settings, noise=self.noise, rank=rank, world_size=world)

    @property
    def has_clean_val(self) -> bool:
        """False when validation can only score held-out noisy crops (``add_noise=False``, no ``val_dir``)."""
        return self.settings.add_noise or self.settings.val_dir is not None

    def _build_val(self) -> dict[str, Tensor]:
        """The fixed validation set (module doc): all chosen crops corrupted in one call, params drawn first."""
        if not self.has_clean_val:
            return self._build_noisy_val()
        if not self.settings.add_noise:
            return self._build_paired_val()
        source = self.settings.val_dir if self.settings.val_dir is not None else DEFAULT_VAL_SOURCE
        files = resolve_sources(
            source, recursive=self.settings.recursive, default_split="val", setting="val_dir"
        )
        s = self.settings.val_size
        chosen, crops, too_small = [], [], []
        for path in files:
            try:
                image = load_image(path, self.settings.channels)
            except (ImageDecodeError, OSError) as exc:
                warnings.warn(f"val_dir: skipping undecodable image {path}: {exc}", DataWarning, stacklevel=3)
                continue
            h, w = image.shape[:2]
            if min(h, w) < s:
                too_small.append(path.name)
                continue
            top, left = (h - s) // 2, (w - s) // 2
            crops.append(image[top : top + s, left : left + s])
            chosen.append(path)
            if len(chosen) == self.settings.val_count:
                break
        if too_small:
            warnings.warn(
                f"val_dir: skipped {len(too_small)} image(s) smaller than val_size={s}: "
                + ", ".join(too_small[:5]),
                DataWarning,
                stacklevel=3,
            )
        if not chosen:
            raise ValueError(
                f"val_dir={source}: no decodable validation image of at least {s}x{s}; lower val_size, point "
                "val_dir at other images, or set val_count=0 to disable validation"
            )
        if self.noise is None:
            raise ValueError(
                "validation needs the noise model: pass noise=... to DenoisingDataModule or call set_noise() "
                "before setup (or set val_count=0 to disable validation)"
            )
        clean = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
        gen = torch.Generator().manual_seed(self.settings.seed + VAL_SEED_OFFSET)
        params = self.noise.sample_params(len(chosen), gen)
        with torch.no_grad():
            noisy = self.noise.corrupt(clean, params, gen)
        self.val_files = chosen
        return {
            "clean": clean,
            "noisy": noisy.float(),
            "params": params.to(torch.float64),
            "index": torch.arange(len(chosen)),
        }

    def _build_paired_val(self) -> dict[str, Tensor]:
        """Centre ``val_size``² crops of the first ``val_count`` noisy/clean pairs of ``val_dir``
        (``ssdn.data.pairs``): the real noise, scored against its clean version, both scaled by their depth."""
        s, setting, source = self.settings.val_size, "data.val_dir", self.settings.val_dir
        folders = [Path(str(f)) for f in (source if isinstance(source, (list, tuple)) else [source])]
        pairs = [pair for f in folders for pair in find_pairs(f, self.settings.recursive, setting)]
        noisy, clean, chosen, too_small = [], [], [], []
        # scaled as the noisy training crops when data.offset / data.peak say how, else each by its own depth
        given = self.settings.offset or self.settings.peak is not None
        scale = self._training_stream().intensity if given else None
        for pair in pairs:
            a, b = (load_native(p, self.settings.channels) for p in (pair.noisy, pair.clean))
            if a.shape != b.shape or a.dtype != b.dtype:
                raise PairsError(
                    f"{setting}: {pair.noisy} ({a.shape[1]}x{a.shape[0]}, {bit_depth(a)}-bit) and its clean "
                    f"partner {pair.clean} ({b.shape[1]}x{b.shape[0]}, {bit_depth(b)}-bit) differ; a pair must "
                    "have one size and depth"
                )
            h, w = a.shape[:2]
            if min(h, w) < s:
                too_small.append(pair.noisy.name)
                continue
            top, left = (h - s) // 2, (w - s) // 2
            intensity = scale or Intensity.of_depth(bit_depth(a))
            noisy.append(intensity.to_unit(a[top : top + s, left : left + s]))
            clean.append(intensity.to_unit(b[top : top + s, left : left + s]))
            chosen.append(pair.noisy)
            if len(chosen) == self.settings.val_count:
                break
        if not chosen:
            raise PairsError(
                f"{setting}={source}: every pair is smaller than data.val_size={s} ({', '.join(too_small[:3])}); "
                "lower data.val_size"
            )
        if too_small:
            warnings.warn(
                f"{setting}: skipped {len(too_small)} pair(s) smaller than val_size={s}: "
                + ", ".join(too_small[:5]),
                DataWarning,
                stacklevel=3,
            )
        self.val_files = chosen

        def stack(crops: list[np.ndarray]) -> Tensor:
            return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()

        return {"clean": stack(clean), "noisy": stack(noisy), "index": torch.arange(len(chosen))}

    def _build_noisy_val(self) -> dict[str, Tensor]:
        """Centre ``val_size``² crops of the held-out noisy training files, scaled as the training crops."""
        stream = self._training_stream()
        noisy = stream.held_out_crops(self.settings.val_size)
        self.val_files = list(stream.held_out)
        return {"noisy": noisy, "index": torch.arange(len(noisy))}

    def estimation_images(self, count: int = 32) -> list[Tensor]:
        """Up to ``count`` noisy training images (C, H, W) float32 to estimate the initial noise level from.

        The first ``count`` training files (planes of stacks: ``count`` spread evenly over every stack's planes,
        also for a 3-D model; ``RandomCropStream.estimation_pixels``):
        as read when ``add_noise=False``; otherwise corrupted once by the
        noise model with a CPU generator seeded ``seed + ESTIMATE_SEED_OFFSET``. Every DDP rank gets the same.
        """
        if self.train_stream is None:
            self.setup("fit")
        assert self.train_stream is not None
        pixels = self.train_stream.estimation_pixels(count)
        scale = self.train_stream.intensity
        images = [torch.from_numpy(scale.to_unit(image)).permute(2, 0, 1) for image in pixels]
        if not self.settings.add_noise:
            return images
        if self.noise is None:
            raise ValueError(
                "estimating the level from clean images needs the noise model: call set_noise first"
            )
        gen = torch.Generator().manual_seed(self.settings.seed + ESTIMATE_SEED_OFFSET)
        params = self.noise.sample_params(len(images), gen)
        with torch.no_grad():
            return [self.noise.corrupt(x[None], p[None], gen)[0] for x, p in zip(images, params, strict=True)]

    def pixel_scale(self) -> dict[str, Any]:
        """How pixels were scaled to model units for training (stored in checkpoints; denoising reads the same):
        the depth, and the intensity scale (v − offset) / peak of ``ssdn.data.intensity``."""
        stream = self.train_stream
        depth = stream.bit_depth if stream is not None else 8
        intensity = stream.intensity if stream is not None else Intensity.of_depth(depth)
        return {
            "add_noise": self.settings.add_noise,
            "bit_depth": depth,
            "max_value": 2**depth - 1,
            **intensity.record(),
        }

    # ------------------------------------------------------------------ loaders

    def train_dataloader(self) -> DataLoader:
        """Whole batches from the stream, starting at the module's ``batches_seen`` (exact resume)."""
        if self.train_stream is None:
            self.setup("fit")
        assert self.train_stream is not None
        stream = self.train_stream
        stream.rank, stream.world_size, stream.batch_size = self._layout()
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is not None:
            stream.start_batch = int(getattr(module, "batches_seen", 0))
        workers = self.settings.num_workers
        if stream.schedule is not None:
            # built ahead of the step: the workers' prefetch, Lightning's one-batch prefetch, and one to spare
            stream.schedule.lookahead = workers * PREFETCH + 2
        return DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            prefetch_factor=PREFETCH if workers > 0 else None,
            persistent_workers=workers > 0,
            pin_memory=self._on_cuda(),
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:  # noqa: ARG002 -- Lightning's hook
        """Files a loader worker found undecodable at crop time reach this process's record (and checkpoints)."""
        if isinstance(batch, dict) and "crop_failed" in batch:
            failed = batch.pop("crop_failed")
            if self.train_stream is not None:
                self.train_stream.mark_crop_failed(failed.tolist())
        return batch

    def val_dataloader(self) -> DataLoader | list:
        """The fixed validation set in per-rank batches; an empty list (no validation) for val_count=0."""
        if self.settings.val_count == 0:
            return []
        if self._val is None:
            self.setup("validate")
        assert self._val is not None
        return DataLoader(
            _ValSet(self._val), batch_size=self._layout()[2], shuffle=False, pin_memory=self._on_cuda()
        )

    def _on_cuda(self) -> bool:
        if self.trainer is None:
            return False
        device = getattr(self.trainer.strategy, "root_device", None)
        return device is not None and device.type == "cuda"

    # ------------------------------------------------------------------ records

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints so that each one documents exactly which images it was trained on."""
        return {
            "train": self.train_stream.describe() if self.train_stream is not None else None,
            "val_files": [str(p) for p in self.val_files],
            "val_size": self.settings.val_size,
            "pixel_scale": self.pixel_scale(),
            "seed": self.settings.seed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Warn when resuming on different training images (names compared, so moved folders are fine)."""
        train = state_dict.get("train") or {}
        saved = train.get("files")
        if saved is None or self.train_stream is None:
            return
        # files that failed at crop time are recorded apart from ``files``, but were part of the choice
        failed = {Path(p).name for p in train.get("crop_failed_files", [])}
        now = [p.name for p in self.train_stream.files]
        if [Path(p).name for p in saved] != [n for n in now if n not in failed] or not failed <= set(now):
            warnings.warn(
                f"resuming on different training images: the checkpoint used {len(saved)} file(s), this run "
                f"has {len(now)} (or other names/order); the crop sequence will not match the original run",
                DataWarning,
                stacklevel=2,
            )
