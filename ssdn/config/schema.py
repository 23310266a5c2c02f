"""The run-config schema: the type, default and allowed values of every group's keys, declared once.

Hydra merges each group's YAML onto its schema (``defaults: [/schema/<name>@_here_]``), so a wrong type or a
value outside an Enum fails at composition with the key named, before any code runs. Enum member names equal
their values because OmegaConf converts strings to Enums by name. The values are also the single list the
methods accept (``ssdn.methods``), so this module imports nothing of ssdn: the core may import it.
Adding a key is one dataclass field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from omegaconf import MISSING


class Objective(StrEnum):
    """What the network is trained for: the prior (likelihood + posterior mean) or a point estimate."""

    prior = "prior"
    mean = "mean"


class Prior(StrEnum):
    """Covariance of the Gaussian prior: full Σ_x or the diagonal ablation."""

    full = "full"
    diagonal = "diagonal"


class Target(StrEnum):
    """Training target: the noisy input (self-supervised), the clean image (N2C) or a second noisy copy (N2N)."""

    noisy = "noisy"
    clean = "clean"
    second_noisy = "second_noisy"


class Loss(StrEnum):
    """Regression loss of the mean objective; ``auto`` picks annealed Lp for non-zero-mean noise."""

    auto = "auto"
    l2 = "l2"
    lp_anneal = "lp_anneal"


class Masking(StrEnum):
    """Masking strategy of the Noise2Void-style baselines."""

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


@dataclass
class NoiseConfig:
    name: str = MISSING  # checked against the noise registry by validate_config
    value: Any = MISSING  # a number, a [low, high] pair, or a mapping of such


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


@dataclass
class ClassicalConfig:
    """An evaluation-only baseline: nothing to train, so none of the training keys."""

    name: str = MISSING
    tag: str = MISSING
    classical: Classical = MISSING
    workers: int = 2  # images denoised in parallel processes


@dataclass
class CropStageConfig:
    """One early stage of a crop-size curriculum: ``crop_size``² crops in global batches of ``batch_size`` until
    ``until`` (a fraction of the run's planned images); ``ssdn.data.curriculum``."""

    until: float = MISSING
    crop_size: int = MISSING
    batch_size: int = MISSING


@dataclass
class DataConfig:
    train_dir: Any = MISSING  # a folder, a list of folders, a packed set or skimage:train
    val_dir: Any = MISSING
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
    # earlier stages before crop_size/batch_size run to the end, e.g. [{until: 0.4, crop_size: 64, batch_size: 8}]
    curriculum: list[CropStageConfig] = field(default_factory=list)


@dataclass
class TrainConfig:
    """Training length: ``images`` (the paper's way, exact) or, when set, ``minutes`` of wall time, over which
    the same schedule is fitted from the measured throughput (``ssdn.training.budget``); ``minutes`` then replaces
    ``images``, and ``trainer.max_steps`` must be left unset."""

    images: int = 800
    minutes: float | None = None


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


SCHEMAS: dict[str, type] = {
    "noise": NoiseConfig,
    "noise_params": NoiseParamsConfig,
    "method": MethodConfig,
    "classical": ClassicalConfig,
    "data": DataConfig,
    "train": TrainConfig,
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
