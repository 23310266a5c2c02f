"""The run-config schema: one typed definition per section, its defaults, allowed values and rules.

Hydra merges each group's YAML onto its schema (``defaults: [/schema/<name>@_here_]``), so a wrong type or a
value outside an Enum fails at composition with the key named, before any code runs. What a type cannot say
(a range, a multiple of 32, two keys that exclude each other) each section says in its ``errors()``, one
message per problem naming the key; rules that span sections are ``ssdn.config.run.RunConfig.errors``. Enum
member names equal their values because OmegaConf converts strings to Enums by name; the Enums are the single
list of values the methods accept (``ssdn.methods``), so the core imports this module and it imports only the
bottom floor (errors, the U-Net's side multiple). Adding a key is one dataclass field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from ssdn.errors import UserError
from ssdn.nets.unet import MAX_BLIND_HOLE, SIDE_MULTIPLE


class ConfigError(UserError, ValueError):
    """An invalid run configuration; the message names every setting to change, on one line."""

    @classmethod
    def of(cls, errors: Sequence[str]) -> ConfigError:
        return cls("invalid configuration: " + "; ".join(errors))


class Objective(StrEnum):
    """What the network is trained for: the prior (likelihood + posterior mean) or a point estimate."""

    prior = "prior"
    mean = "mean"


class Prior(StrEnum):
    """Covariance of the Gaussian prior: full Σ_x or the diagonal ablation (``ssdn.methods.prior``)."""

    full = "full"
    diagonal = "diagonal"


class Target(StrEnum):
    """Training target: the noisy input (self-supervised), the clean image (N2C) or a second noisy copy (N2N)."""

    noisy = "noisy"
    clean = "clean"
    second_noisy = "second_noisy"


class Loss(StrEnum):
    """Regression loss of the mean objective; ``auto`` picks annealed Lp for non-zero-mean noise (the others
    are ``REGRESSION_LOSSES``)."""

    auto = "auto"
    l2 = "l2"
    lp_anneal = "lp_anneal"


class Masking(StrEnum):
    """Masking strategy of the Noise2Void-style baselines (``ssdn.methods.masking``): the masked pixel takes an
    unmasked neighbour's value or a uniform random colour."""

    copy = "copy"
    random = "random"


#: Where the noise level comes from (``global`` is a Python keyword, hence the functional form).
LevelSourceName = StrEnum(
    "LevelSourceName", [("known", "known"), ("global", "global"), ("per_image", "per_image")]
)


class LevelInit(StrEnum):
    """Where a learned level starts: a classical estimate from the training data, or the authors' 4.9/255."""

    data = "data"
    paper = "paper"


class Classical(StrEnum):
    """The non-learned baselines (evaluation only)."""

    cbm3d_known = "cbm3d_known"
    cbm3d_estimated = "cbm3d_estimated"
    anscombe = "anscombe"


class LoggerKind(StrEnum):
    wandb = "wandb"
    csv = "csv"
    none = "none"


class WandbMode(StrEnum):
    """``auto``: online with an API key, offline otherwise."""

    auto = "auto"
    online = "online"
    offline = "offline"
    disabled = "disabled"


#: The losses ``MeanObjective`` computes: every ``Loss`` but the ``auto`` choice between them.
REGRESSION_LOSSES = tuple(loss.value for loss in Loss if loss is not Loss.auto)


def multiple_errors(key: str, value: int, multiple: int, why: str) -> list[str]:
    """``[message]`` unless ``value`` is a positive multiple of ``multiple`` (``why``: who needs it)."""
    if value < multiple or value % multiple:
        return [f"{key}={value}: {why} needs a positive multiple of {multiple} (e.g. 64 or 256)"]
    return []


def channels_errors(channels: int) -> list[str]:
    """The run's ``channels`` (a top-level key: the images' format, read by the data and the network)."""
    return [] if channels in (1, 3) else [f"channels={channels}: use 3 (RGB) or 1 (mono)"]


@dataclass
class NoiseConfig:
    name: str = MISSING  # a noise model of ssdn.noise
    value: Any = MISSING  # a number, a [low, high] pair, or a mapping of such

    @property
    def plain_value(self) -> Any:
        """``value`` as plain Python (a float, a list or a dict), as the noise models take it."""
        if isinstance(self.value, Mapping):
            return {str(k): list(v) if isinstance(v, Sequence) else v for k, v in self.value.items()}
        if isinstance(self.value, Sequence) and not isinstance(self.value, str):
            return list(self.value)
        return self.value

    @property
    def ranged(self) -> bool:
        """True when the level is drawn per image from a range (``[low, high]``, or a range in a mapping)."""
        values = self.value.values() if isinstance(self.value, Mapping) else [self.value]
        return any(isinstance(v, Sequence) and not isinstance(v, str) for v in values)

    def errors(self) -> list[str]:
        from ssdn.noise import build_noise

        try:
            build_noise(self.name, self.plain_value)
        except (ValueError, KeyError) as exc:
            return [f"noise: {exc}"]
        return []

    def channels_errors(self, channels: int) -> list[str]:
        """The run's ``channels`` against what the noise model describes (the channel-correlated one: RGB)."""
        from ssdn.noise import NOISE_MODELS

        cls = NOISE_MODELS.get(self.name)
        error = cls.channels_error(channels) if cls is not None else None
        return [] if error is None else [error]


@dataclass
class NoiseParamsConfig:
    source: LevelSourceName = MISSING
    tag: str = MISSING
    init: LevelInit = LevelInit.data  # learned levels only; the paper's rows set paper


@dataclass
class MethodConfig:
    """A trained method; the defaults are the paper's (blind-spot net, full Σ, self-supervised)."""

    name: str = MISSING
    tag: str = MISSING
    blindspot: bool = True
    target: Target = Target.noisy
    objective: Objective = Objective.prior
    prior: Prior = Prior.full
    loss: Loss = Loss.auto
    masking: Masking | None = None
    mask_cell: int = 32  # one masked pixel per cell² block (64 per 256² crop)
    blind_hole: int = 1  # odd side of the blind square of the blind-spot net (1: the centre pixel only)
    #: the blind square at inference; null: blind_hole. Training with a larger square than inference keeps the
    #: net from learning correlated noise while it denoises with the nearest pixels (bench/README.md, camera)
    blind_hole_infer: int | None = None
    pd_stride: int = 1  # pixel-shuffle downsampling stride in training (1: none)
    pd_stride_infer: int | None = None  # the stride at inference; null: pd_stride

    def errors(self) -> list[str]:
        errors: list[str] = []
        if self.mask_cell < 1:
            errors.append(f"method.mask_cell={self.mask_cell}: one masked pixel per cell needs a cell >= 1")
        holes = [("blind_hole", self.blind_hole), ("blind_hole_infer", self.blind_hole_infer)]
        for key, hole in holes:
            if hole is None:
                continue
            if hole < 1 or hole % 2 == 0 or hole > MAX_BLIND_HOLE:
                errors.append(
                    f"method.{key}={hole}: the blind square's side is an odd number from 1 to {MAX_BLIND_HOLE}"
                )
            elif hole > 1 and not self.blindspot:
                errors.append(
                    f"method.{key}={hole} with method.blindspot=false: only the blind-spot net has a "
                    f"blind square; set blindspot=true or {key}=1"
                )
        if self.pd_stride < 1:
            errors.append(f"method.pd_stride={self.pd_stride}: a downsampling stride is >= 1 (1: none)")
        if self.pd_stride_infer is not None and self.pd_stride_infer < 1:
            errors.append(
                f"method.pd_stride_infer={self.pd_stride_infer}: a downsampling stride is >= 1, or null for "
                "method.pd_stride"
            )
        return errors


@dataclass
class ModelConfig:
    """The network: the paper's 2-D U-Net (``dims=2``, the default) or its 3-D blind-spot construction for
    microscopy volumes (``dims=3``, ``ssdn.nets.UNet3D``), which trains on ``data.crop_depth`` × ``data.crop_size``²
    sub-volumes of ZYX stacks. ``levels``, ``enc_channels`` and ``dec_channels`` (the paper's 5, 48, 96) trade
    receptive field and capacity for time, ``pool_z`` handles anisotropic voxels (``true``: every pooling halves Z;
    ``false``: none does; ``k``: the k deepest do); all four are settings of the 3-D net only."""

    dims: int = 2
    pool_z: bool | int = True
    levels: int = 5
    enc_channels: int = 48
    dec_channels: int = 96

    @property
    def z_pools(self) -> int:
        """How many poolings also halve Z (``UNet3D``'s rule for ``pool_z``)."""
        return self.levels if self.pool_z is True else 0 if self.pool_z is False else int(self.pool_z)

    @property
    def side_multiple3d(self) -> tuple[int, int, int]:
        """What a 3-D crop's depth, height and width must be multiples of (``UNet3D.side_multiple``)."""
        return 2**self.z_pools, 2**self.levels, 2**self.levels

    def errors(self) -> list[str]:
        if self.dims not in (2, 3):
            return [f"model.dims={self.dims}: use 2 (images, planes of stacks) or 3 (volumes of ZYX stacks)"]
        errors: list[str] = []
        if self.dims == 2:
            default = ModelConfig()
            errors += [
                f"model.{key}={getattr(self, key)} is a setting of the 3-D net; set model.dims=3 or leave it out"
                for key in ("pool_z", "levels", "enc_channels", "dec_channels")
                if getattr(self, key) != getattr(default, key)
            ]
            return errors
        for key in ("levels", "enc_channels", "dec_channels"):
            if getattr(self, key) < 1:
                errors.append(f"model.{key}={getattr(self, key)} must be >= 1")
        if not isinstance(self.pool_z, bool) and not 0 <= self.pool_z <= self.levels:
            errors.append(
                f"model.pool_z={self.pool_z}: true (Z pooled at every level), false (never), or how many of the "
                f"model.levels={self.levels} deepest poolings also halve Z (0..{self.levels})"
            )
        return errors


def volume_errors(model: ModelConfig, data: DataConfig) -> list[str]:
    """What ``model.dims`` needs of the data section: ``data.crop_depth`` only and always with volumes, ZYX
    stacks, crop sides the 3-D net takes, and no crop-size curriculum (its stages are 2-D crops)."""
    if model.dims != 3:
        if data.crop_depth is not None:
            return [
                f"data.crop_depth={data.crop_depth} is the depth of 3-D training crops; set model.dims=3 or "
                "data.crop_depth=null"
            ]
        return []
    errors: list[str] = []
    if data.axes is None or "Z" not in str(data.axes).upper():
        errors.append(
            f"model.dims=3 trains on volumes of stacks with a Z axis, but data.axes={data.axes}; set data.axes "
            "(e.g. ZYX, TZYX, ZCYX) or model.dims=2"
        )
    depth, side, _ = model.side_multiple3d
    if data.crop_depth is None:
        errors.append(
            f"model.dims=3 needs data.crop_depth, the Z planes of each training volume (a positive multiple of "
            f"{depth}, e.g. data.crop_depth={max(depth, 16)})"
        )
    elif data.crop_depth < depth or data.crop_depth % depth:
        errors.append(
            f"data.crop_depth={data.crop_depth}: the 3-D net pools Z {model.z_pools} time(s) (model.pool_z), so "
            f"it needs a positive multiple of {depth}"
        )
    for key in ("crop_size", "val_size"):
        errors += multiple_errors(f"data.{key}", getattr(data, key), side, "the 3-D net (model.levels)")
    if data.curriculum:
        errors.append("data.curriculum with model.dims=3: crop-size stages are 2-D; set data.curriculum=[]")
    return errors


def volume_method_errors(model: ModelConfig, method: MethodConfig, level_source: str) -> list[str]:
    """The methods a 3-D net trains: the blind-spot U-Net's (``method=ssdn``, its diagonal and μ-only variants),
    on the noisy volumes themselves, with a known or one global level (the per-image estimator is a 2-D net)."""
    if model.dims != 3:
        return []
    what = "with model.dims=3: the 3-D net is the paper's blind-spot U-Net; use method=ssdn (or mu_only)"
    errors: list[str] = []
    if not method.blindspot:
        errors.append(f"method={method.name} (method.blindspot=false) {what}")
    if method.masking is not None:
        errors.append(f"method={method.name} (method.masking={method.masking}) {what}")
    if method.target != Target.noisy:
        errors.append(f"method={method.name} (method.target={method.target}) {what}")
    for key, hole in (("blind_hole", method.blind_hole), ("blind_hole_infer", method.blind_hole_infer)):
        if hole not in (None, 1):
            errors.append(f"method.{key}={hole} {what} with method.{key}=1")
    if method.pd_stride != 1 or method.pd_stride_infer not in (None, 1):
        errors.append(
            f"method.pd_stride={method.pd_stride} (pd_stride_infer={method.pd_stride_infer}) {what} with "
            "method.pd_stride=1"
        )
    if level_source == "per_image":
        errors.append(
            "noise_params=sigma_per_image with model.dims=3: the per-image level estimator is a 2-D net; use "
            "noise_params=sigma_global (one learned level) or sigma_known"
        )
    return errors


@dataclass
class ClassicalConfig:
    """An evaluation-only baseline: nothing to train, so none of the training keys."""

    name: str = MISSING
    tag: str = MISSING
    classical: Classical = MISSING
    workers: int = 2  # images denoised in parallel processes

    def errors(self) -> list[str]:
        return [f"method.workers={self.workers}: use 1 or more processes"] if self.workers < 1 else []


@dataclass
class CropStage:
    """One early stage of a crop-size curriculum: ``crop_size``² crops in global batches of ``batch_size`` until
    ``until`` (a fraction of the run's planned images); ``ssdn.data.curriculum``."""

    until: float = MISSING
    crop_size: int = MISSING
    batch_size: int = MISSING


def curriculum_errors(stages: Sequence[CropStage], world_size: int = 1) -> list[str]:
    """What is wrong with the early stages of ``data.curriculum``, one message per problem, key named."""
    errors: list[str] = []
    previous = 0.0
    for i, stage in enumerate(stages):
        key = f"data.curriculum[{i}]"
        if not previous < stage.until < 1.0:
            errors.append(
                f"{key}.until={stage.until}: a stage ends at a fraction of the run's images in (0, 1), "
                f"after the previous stage's end ({previous:g}); the last stage (data.crop_size, "
                "data.batch_size) runs to the end"
            )
        previous = max(previous, stage.until)
        errors += multiple_errors(f"{key}.crop_size", stage.crop_size, SIDE_MULTIPLE, "the U-Net")
        if stage.batch_size < 1 or stage.batch_size % world_size:
            errors.append(
                f"{key}.batch_size={stage.batch_size} must be a positive multiple of the world size "
                f"{world_size} (it is the global batch, split across ranks)"
            )
    return errors


def as_stages(value: Any) -> tuple[CropStage, ...]:
    """``data.curriculum`` as given (stages, or mappings as a config or a checkpoint holds them) as a tuple."""
    if not value:
        return ()
    out = []
    for i, item in enumerate(value):
        if isinstance(item, CropStage):
            out.append(item)
            continue
        if not isinstance(item, Mapping) or set(item) != {"until", "crop_size", "batch_size"}:
            raise ConfigError(
                f"data.curriculum[{i}]={item!r}: each stage is {{until: fraction, crop_size: int, batch_size: int}}"
            )
        out.append(CropStage(float(item["until"]), int(item["crop_size"]), int(item["batch_size"])))
    return tuple(out)


def _source(value: Any) -> Any:
    """A folder or spec as given; a list of them (also a config's list) as a tuple of str/Path."""
    if value is None or isinstance(value, str | Path):
        return value
    return tuple(v if isinstance(v, Path) else str(v) for v in value)


@dataclass
class DataConfig:
    """Where the training and validation images come from and how they are cut (``conf/data/*.yaml``).

    ``train_dir`` / ``val_dir``: a folder, a list of folders, a packed set (train only), or ``"skimage"`` /
    ``"skimage:<split>"`` (``ssdn.data.embedded``); ``val_dir=None`` means ``"skimage:val"``, or, with
    ``add_noise=False`` (the training images *are* the noisy observations), the first ``val_count`` training
    files held out as noisy validation crops. ``batch_size`` is the **global** batch, split evenly over DDP
    ranks. ``curriculum``: earlier stages of other crop and batch sizes before ``crop_size``/``batch_size`` run
    to the end (``ssdn.data.curriculum``), e.g. ``[{until: 0.4, crop_size: 64, batch_size: 8}]``.

    ``axes`` (OME letters, e.g. ``ZYX``, ``TYX``, ``CYX``, ``TZCYX``): the training files are microscopy stacks
    (TIFF / OME-TIFF, OME-Zarr; ``ssdn.data.stack_planes``) and a 2-D model trains on their planes, every T and
    Z; files that name their own axes are read with them, ``axes`` covering each. ``channels_independent``:
    each channel of the C axis is its own 1-channel image (``channels=1``) instead of the model's channels.
    With stacks, ``val_count`` counts validation planes (from whole held-out stacks), ``subset`` counts stacks,
    and ``in_memory`` has no effect (planes are read one at a time). ``crop_depth``: with ``model.dims=3`` the
    crops are ``crop_depth`` × ``crop_size``² sub-volumes of every T (``ssdn.data.volume_crops``), and
    ``val_count`` counts ``crop_depth``-plane sub-volumes of the held-out stacks. ``offset`` / ``peak``: noisy
    files are scaled as (v − offset) / peak (``ssdn.data.intensity``): the camera offset, and the value mapped
    to 1 (``auto``: measured from the training images), for counts that use a small part of their bit depth.
    """

    train_dir: Any = MISSING  # a folder, a list of folders, a packed set or skimage:train
    val_dir: Any = None
    crop_size: int = 256
    batch_size: int = 4  # the global batch: split across DDP ranks
    num_workers: int = 2
    size_filter: bool = False
    rotate_aug: bool = False
    subset: int | None = None
    subset_seed: int = 0
    recursive: bool = True
    in_memory: bool = False
    fixed_noise: bool = False
    add_noise: bool = True  # false: the training images are the noisy observations, used as read
    val_count: int = 4
    val_size: int = 256
    curriculum: list[CropStage] = field(default_factory=list)
    axes: str | None = None  # null: 2-D images; else the stacks' axes, e.g. ZYX, TYX, CYX, TZCYX
    channels_independent: bool = False  # stacks: each channel its own 1-channel image (and its own level)
    crop_depth: int | None = None  # model.dims=3: Z planes of each training volume (null with 2-D models)
    offset: float = 0.0  # noisy files: the stored value of no light (camera offset), subtracted first
    peak: Any = None  # noisy files: the stored value above offset that maps to 1; null: 2^depth - 1; auto

    def intensity_errors(self) -> list[str]:
        """``offset`` and ``peak`` (``ssdn.data.intensity``): a finite offset >= 0 and a positive peak or auto, for
        noisy files only (clean images are corrupted at the paper's v / 255 scale, where the levels are defined)."""
        errors = []
        if not (isinstance(self.offset, (int, float)) and math.isfinite(self.offset) and self.offset >= 0):
            errors.append(
                f"data.offset={self.offset} must be a finite number >= 0 (the camera offset, stored units)"
            )
        peak = self.peak
        if peak is not None and peak != "auto":
            if (
                isinstance(peak, bool)
                or not isinstance(peak, (int, float))
                or not (math.isfinite(peak) and peak > 0)
            ):
                errors.append(
                    f"data.peak={peak} must be a positive number (the stored value above data.offset that maps to "
                    "1), auto (measured from the training images), or null (the bit depth's maximum)"
                )
        if self.add_noise and (self.offset or peak is not None):
            errors.append(
                "data.offset / data.peak scale noisy files (data.add_noise=false); clean images are corrupted at "
                "the paper's scale, so leave them at 0 and null"
            )
        return errors

    @property
    def largest_crop(self) -> int:
        """The largest crop any stage cuts: training images must be at least this size."""
        return max([self.crop_size, *(s.crop_size for s in self.curriculum)])

    def errors(self, world_size: int = 1) -> list[str]:
        """The section's own rules; ``world_size``: the ranks the global batches are split over."""
        errors: list[str] = []
        if self.crop_size < 1:
            errors.append(f"data.crop_size={self.crop_size} must be >= 1")
        if self.batch_size < 1 or self.batch_size % world_size:
            errors.append(
                f"data.batch_size={self.batch_size} must be a positive multiple of the world size {world_size} "
                "(it is the global batch, split across ranks)"
            )
        for key in ("num_workers", "val_count", "subset_seed"):
            if getattr(self, key) < 0:
                errors.append(f"data.{key}={getattr(self, key)} must be >= 0")
        if self.subset is not None and self.subset < 1:
            errors.append(f"data.subset={self.subset}: give a positive image count, or null for all images")
        if self.fixed_noise and not self.add_noise:
            errors.append(
                "data.fixed_noise=true has no meaning with data.add_noise=false (no noise is added: the images "
                "are already noisy); set data.fixed_noise=false"
            )
        errors += multiple_errors(
            "data.val_size", self.val_size, SIDE_MULTIPLE, "the blind-spot network's square input"
        )
        errors += self.intensity_errors()
        return errors + self._stack_errors() + curriculum_errors(self.curriculum, world_size)

    def _stack_errors(self) -> list[str]:
        """``axes`` and ``channels_independent``: valid axes, and what training on stacks supports."""
        from ssdn.data.stacks import AxesError, check_axes

        if self.axes is None:
            if self.channels_independent:
                return [
                    "data.channels_independent=true needs stacks with a channel axis: set data.axes (e.g. CYX or "
                    "ZCYX), or data.channels_independent=false"
                ]
            return []
        try:
            axes = check_axes(self.axes)
        except AxesError as exc:
            return [str(exc)]
        errors = []
        if self.channels_independent and "C" not in axes:
            errors.append(
                f"data.channels_independent=true with data.axes={axes}: no C axis to split; add C to data.axes "
                "or set data.channels_independent=false"
            )
        if self.add_noise:
            errors.append(
                f"data.axes={axes}: stacks are trained on as the noisy counts they store; set "
                "data.add_noise=false (or data.axes=null for a folder of clean 2-D images)"
            )
        if self.val_dir is not None:
            errors.append(
                f"data.axes={axes} with data.val_dir: validation on stacks uses held-out training stacks "
                "(data.val_count); set data.val_dir=null"
            )
        return errors


@dataclass
class DataSettings(DataConfig):
    """The ``data`` section bound to the run's image format (``channels``), ``seed`` and network (``model``: a
    3-D net's crops are volumes): what the data module and the crop stream read. Checked when built (a
    ``ConfigError`` naming every key), so a data module never starts on settings the run config would refuse.
    ``seed`` drives crops, subsets aside (``subset_seed``), and the validation noise."""

    channels: int = 3
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        self.train_dir = _source(self.train_dir)
        self.val_dir = _source(self.val_dir)
        self.curriculum = list(as_stages(self.curriculum))
        errors = self.errors() + channels_errors(self.channels) + volume_errors(self.model, self)
        if self.seed < 0:
            errors.append(f"seed={self.seed} must be >= 0")
        if self.channels_independent and self.channels != 1:
            errors.append(
                f"data.channels_independent=true with channels={self.channels}: each channel is a 1-channel "
                "image; set channels=1"
            )
        if errors:
            raise ConfigError.of(errors)
        if self.axes is not None:
            self.axes = str(self.axes).strip().upper()

    @property
    def dims(self) -> int:
        """2: crops of images or planes; 3: volumes of stacks (``model.dims``)."""
        return self.model.dims

    @classmethod
    def of(
        cls, data: DataConfig, *, channels: int, seed: int, model: ModelConfig | None = None
    ) -> DataSettings:
        """The run's data section with its channels, seed and network (what its crops must fit)."""
        values = {f.name: getattr(data, f.name) for f in fields(DataConfig)}
        return cls(**values, channels=channels, seed=seed, model=model or ModelConfig())


@dataclass
class TrainConfig:
    """Training length: ``images`` (the paper's way, exact) or, when set, ``minutes`` of wall time, over which
    the same schedule is fitted from the measured throughput (``ssdn.training.budget``); ``minutes`` then replaces
    ``images``, and ``trainer.max_steps`` must be left unset."""

    images: int = 800
    minutes: float | None = None
    #: stop with one line naming optim.lr when the smoothed loss climbs back above its start
    #: (``ssdn.training.divergence``; not for method.loss=lp_anneal, whose scale changes as it anneals); false
    #: trains on regardless
    stop_on_divergence: bool = True

    def errors(self) -> list[str]:
        if self.minutes is not None and self.minutes <= 0:
            return [f"train.minutes={self.minutes} must be positive (or null to train for train.images)"]
        return []


@dataclass
class TrainerConfig:
    """Lightning trainer settings; the defaults are those of a GPU run, the options state what differs."""

    accelerator: str = "auto"
    devices: Any = 1  # a count, a list of device indices or auto
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "bf16-mixed"
    max_steps: int | None = None  # null: train.images / data.batch_size
    val_check_interval: int = 2500
    limit_val_batches: Any = None
    log_every_n_steps: int = 50
    enable_progress_bar: bool = True
    checkpoint_every_n_steps: int = 5000

    @property
    def length_in_images(self) -> bool:
        """True when the run length comes from ``train`` (``max_steps`` null or <= 0)."""
        return self.max_steps is None or self.max_steps <= 0

    @property
    def world_size(self) -> int:
        """The ranks a global batch is split over (1 for ``devices=auto``: counted at run time)."""
        devices = self.devices
        n = len(devices) if isinstance(devices, Sequence) and not isinstance(devices, str) else devices
        if n in ("auto", -1, "-1"):
            return 1
        return int(n) * int(self.num_nodes)

    def errors(self) -> list[str]:
        if self.checkpoint_every_n_steps < 1:
            return [f"trainer.checkpoint_every_n_steps={self.checkpoint_every_n_steps} must be >= 1"]
        return []


@dataclass
class PinnedTrainerConfig(TrainerConfig):
    pin_job_to_gpu: bool = True  # job k of a multirun trains on GPU k mod (visible GPUs)


@dataclass
class LoggerConfig:
    kind: LoggerKind = MISSING


@dataclass
class WandbLoggerConfig(LoggerConfig):
    project: str = "ssdn"
    entity: str | None = None
    mode: WandbMode = WandbMode.auto


@dataclass
class EvalConfig:
    """Test-set evaluation after training under the paper's protocol (``ssdn.eval``)."""

    sets: Any = field(default_factory=list)  # a name or a list, e.g. [kodak, bsd300, set14]
    repeats: Any = None  # null: the paper's factor per set; a number for all sets; or a per-set mapping
    seed: int = 0
    pad_mode: str = "authors"
    batch_size: int = 1
    root: str | None = None  # folder holding kodak/ bsd300/ set14/
    limit: int | None = None
    crop: int | None = None
    allow_modified: bool = False

    def errors(self) -> list[str]:
        if self.batch_size < 1:
            return [f"eval.batch_size={self.batch_size} must be >= 1"]
        return []


@dataclass
class OptimConfig:
    lr: float = 3.0e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    eps: float = 1.0e-8


@dataclass
class ScheduleConfig:
    rampup: float = 0.1  # fractions of the run (``ssdn.methods.schedule``)
    rampdown: float = 0.3


@dataclass
class EmaConfig:
    enabled: bool = False
    decay: float = 0.999


@dataclass
class ExampleConfig:
    enabled: bool = True
    image: str = "skimage:val"  # a file, or skimage:val for the embedded hold-out photo
    size: int = 256


@dataclass
class RunNameConfig:
    name: str = MISSING
    group: str = MISSING
    tags: list[str] = field(default_factory=list)


SCHEMAS: dict[str, type] = {
    "noise": NoiseConfig,
    "noise_params": NoiseParamsConfig,
    "method": MethodConfig,
    "model": ModelConfig,
    "classical": ClassicalConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "trainer": TrainerConfig,
    "trainer_pinned": PinnedTrainerConfig,
    "logger": LoggerConfig,
    "logger_wandb": WandbLoggerConfig,
}


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore as ``schema/<name>`` (idempotent); call before composing."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        cs.store(group="schema", name=name, node=node)
