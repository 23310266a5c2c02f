"""The run config, typed: every section as its schema dataclass, built once from the composed config.

Why: the code of a run reads typed sections (``run.data.crop_size``, not ``cfg.data.crop_size`` of an untyped
node), each part gets the section it needs rather than the whole config, and the rules are checked in one
place: each section's own in its ``errors()``, the rules between sections in :meth:`RunConfig.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from ssdn.config.schema import (
    ClassicalConfig,
    ConfigError,
    DataConfig,
    DataSettings,
    EmaConfig,
    EvalConfig,
    ExampleConfig,
    LoggerConfig,
    MethodConfig,
    ModelConfig,
    NoiseConfig,
    NoiseParamsConfig,
    Objective,
    OptimConfig,
    PinnedTrainerConfig,
    Prior,
    RunNameConfig,
    ScheduleConfig,
    Target,
    TrainConfig,
    TrainerConfig,
    WandbLoggerConfig,
    channels_errors,
    multiple_errors,
    volume_errors,
    volume_method_errors,
)
from ssdn.nets.unet import SIDE_MULTIPLE

T = TypeVar("T")


def section(cls: type[T], values: Any, key: str) -> T:
    """``values`` (a mapping or config node) as the section dataclass ``cls`` of the config's ``key``: types
    checked and converted (strings to Enums), missing keys at their defaults; an unset mandatory key, a wrong
    key or a wrong value is a one-line ``ConfigError`` naming it."""
    try:
        node = OmegaConf.merge(OmegaConf.structured(cls), values)
    except Exception as exc:  # OmegaConf's errors are multi-line: the first line says what is wrong
        where = getattr(exc, "full_key", None)
        raise ConfigError(f"{key}.{where}: {str(exc).splitlines()[0]}" if where else f"{key}: {exc}") from exc
    if missing := _missing(node, key):
        raise ConfigError(f"{', '.join(missing)} not set")
    out = OmegaConf.to_object(node)
    assert isinstance(out, cls)
    return out


def _missing(node: Any, key: str) -> list[str]:
    """The full keys of the mandatory values (``???``) left unset in ``node``."""
    items: list[tuple[str, str | int]]
    if isinstance(node, DictConfig):
        items = [(f"{key}.{k!s}", str(k)) for k in node]
    elif isinstance(node, ListConfig):
        items = [(f"{key}[{i}]", i) for i in range(len(node))]
    else:
        return []
    found: list[str] = []
    for full, k in items:
        if OmegaConf.is_missing(node, k):
            found.append(full)
        else:
            found += _missing(node._get_node(k), full)
    return found


def method_section(values: Mapping[str, Any]) -> MethodConfig | ClassicalConfig:
    """A trained method, or an evaluation-only baseline (it has ``classical`` and none of the training keys)."""
    if values.get("classical"):
        return section(ClassicalConfig, values, "method")
    return section(MethodConfig, values, "method")


def plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config resolved into plain dicts, lists and strings (Enums as their values): what checkpoints and
    W&B store, and what a checkpoint's config is read back from. Hydra's own ``hydra`` node is not the run's;
    an ``output_dir`` that cannot resolve (composed outside a Hydra app) is None."""
    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    record: dict[str, Any] = {}
    for key in cfg:
        name = str(key)
        if name == "hydra":
            continue
        if name == "output_dir":
            record[name] = OmegaConf.select(cfg, name, throw_on_resolution_failure=False)
            continue
        value = cfg[name]
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True, enum_to_str=True)
        record[name] = value.value if isinstance(value, Enum) else value
    return record


@dataclass
class RunConfig:
    """One run's configuration (``ssdn/conf/config.yaml``), typed; ``record`` is the same as plain values."""

    noise: NoiseConfig
    noise_params: NoiseParamsConfig
    method: MethodConfig | ClassicalConfig
    data: DataConfig
    trainer: TrainerConfig
    train: TrainConfig
    eval: EvalConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    ema: EmaConfig
    example: ExampleConfig
    logger: LoggerConfig
    run: RunNameConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0
    channels: int = 3
    channels_last: bool = True
    compile: bool = False
    keep_freed_memory: bool = True
    resume: str | None = None
    output_dir: str | None = None  # None: composed outside a Hydra app without one
    record: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dictconfig(cls, cfg: DictConfig | Mapping[str, Any]) -> RunConfig:
        """Build once from the composed config (or its plain record); types are checked, rules are not
        (``check``)."""
        record = plain(cfg)
        trainer = record["trainer"]
        logger = record["logger"]
        return cls(
            noise=section(NoiseConfig, record["noise"], "noise"),
            noise_params=section(NoiseParamsConfig, record["noise_params"], "noise_params"),
            method=method_section(record["method"]),
            data=section(DataConfig, record["data"], "data"),
            trainer=section(
                PinnedTrainerConfig if "pin_job_to_gpu" in trainer else TrainerConfig, trainer, "trainer"
            ),
            train=section(TrainConfig, record.get("train") or {}, "train"),
            eval=section(EvalConfig, record.get("eval") or {}, "eval"),
            optim=section(OptimConfig, record.get("optim") or {}, "optim"),
            schedule=section(ScheduleConfig, record.get("schedule") or {}, "schedule"),
            ema=section(EmaConfig, record.get("ema") or {}, "ema"),
            example=section(ExampleConfig, record.get("example") or {}, "example"),
            logger=section(
                WandbLoggerConfig if logger.get("kind") == "wandb" else LoggerConfig, logger, "logger"
            ),
            run=section(RunNameConfig, record["run"], "run"),
            model=section(ModelConfig, record.get("model") or {}, "model"),
            seed=int(record.get("seed", 0)),
            channels=int(record.get("channels", 3)),
            channels_last=bool(record.get("channels_last", True)),
            compile=bool(record.get("compile", False)),
            keep_freed_memory=bool(record.get("keep_freed_memory", True)),
            resume=None if record.get("resume") is None else str(record["resume"]),
            output_dir=None if record.get("output_dir") is None else str(record["output_dir"]),
            record=record,
        )

    # ------------------------------------------------------------------ derived settings

    @property
    def trained(self) -> MethodConfig:
        """The method section of a trained row (a classical row has nothing to train)."""
        if not isinstance(self.method, MethodConfig):
            raise ConfigError(f"method={self.method.name} is evaluation-only: it has no training settings")
        return self.method

    @property
    def run_dir(self) -> Path:
        """``output_dir``, where the run writes; a ``ConfigError`` when it has none."""
        if self.output_dir is None:
            raise ConfigError(
                "output_dir is not set: pass output_dir=<folder> (compose(..., output_dir=...))"
            )
        return Path(self.output_dir)

    @property
    def data_settings(self) -> DataSettings:
        """The data section with the run's channels, seed and network: what the data module reads."""
        return DataSettings.of(self.data, channels=self.channels, seed=self.seed, model=self.model)

    @property
    def max_steps(self) -> int:
        """Training length in optimizer steps: ``trainer.max_steps`` if set, else ``train.images /
        data.batch_size`` (with a crop-size curriculum, the steps of its stages' batches); -1 (unbounded) with
        ``train.minutes``, whose run stops itself when its planned images are reached."""
        from ssdn.data.curriculum import CropSchedule

        if self.train.minutes is not None:
            return -1
        if not self.trainer.length_in_images:
            assert self.trainer.max_steps is not None
            return self.trainer.max_steps
        if self.data.curriculum:
            schedule = CropSchedule(self.data.curriculum, self.data.crop_size, self.data.batch_size)
            return schedule.steps_for(self.train.images)
        return self.train.images // self.data.batch_size

    # ------------------------------------------------------------------ rules between sections

    def errors(self) -> list[str]:
        """Every problem of the configuration, one message each naming the setting to change."""
        errors = (
            channels_errors(self.channels) + self.noise.errors() + self.eval.errors() + self.method.errors()
        )
        errors += self.noise.channels_errors(self.channels)
        if isinstance(self.method, ClassicalConfig):
            if not self.eval.sets:
                errors.append(
                    f"method={self.method.name} is evaluation-only: set eval.sets, e.g. eval.sets=[kodak]"
                )
            return errors
        errors += self.data.errors(self.trainer.world_size) + self.train.errors() + self.trainer.errors()
        errors += self._method_data_errors(self.method) + self._noisy_data_errors(self.method)
        return errors + self._model_errors(self.method) + self._length_errors()

    def check(self) -> RunConfig:
        """Raise one ``ConfigError`` listing every problem (``errors``); returns itself when there is none."""
        if errors := self.errors():
            raise ConfigError.of(errors)
        return self

    def _model_errors(self, m: MethodConfig) -> list[str]:
        """``model``: its own rules, what a 3-D net needs of the data and the method, and what it does not run
        (the 2-D test sets)."""
        errors = self.model.errors()
        if errors:
            return errors
        errors += volume_errors(self.model, self.data)
        errors += volume_method_errors(self.model, m, str(self.noise_params.source))
        if self.model.dims == 3 and self.eval.sets:
            errors.append(
                f"eval.sets={list(self.eval.sets)} with model.dims=3: the test sets are 2-D photos; set eval.sets=[]"
            )
        return errors

    def _method_data_errors(self, m: MethodConfig) -> list[str]:
        errors: list[str] = []
        if self.model.dims == 2:  # the 3-D net's own side multiples: _model_errors
            errors += multiple_errors("data.crop_size", self.data.crop_size, SIDE_MULTIPLE, "the U-Net")
        if m.objective == Objective.prior and m.prior == Prior.diagonal and self.channels == 1:
            errors.append(
                f"method={m.name} with channels=1: a diagonal Σ is the full Σ for mono images; use method=ssdn"
            )
        if m.masking is not None and m.mask_cell >= 1:
            crops = [("data.crop_size", self.data.crop_size)]
            crops += [
                (f"data.curriculum[{i}].crop_size", s.crop_size) for i, s in enumerate(self.data.curriculum)
            ]
            errors += [
                f"{key}={crop} is not divisible by method.mask_cell={m.mask_cell}"
                for key, crop in crops
                if crop % m.mask_cell
            ]
        if self.data.fixed_noise and m.target == Target.second_noisy:
            errors.append(
                f"data.fixed_noise=true with method={m.name}: N2N needs two noisy copies; use fixed_noise=false"
            )
        return errors

    def _noisy_data_errors(self, m: MethodConfig) -> list[str]:
        """``data.add_noise=false``: the images are the observations, so nothing may need a clean or 2nd copy."""
        from ssdn.config.folder import noisy_target_methods

        if self.data.add_noise:
            return []
        errors: list[str] = []
        if m.target != Target.noisy:
            errors.append(
                f"method={m.name} trains against {m.target} targets, which data.add_noise=false (noisy images "
                f"only) cannot supply; methods that train on noisy data alone: {', '.join(noisy_target_methods())}"
            )
        if self.noise.ranged and self.noise_params.source == "known" and m.objective == Objective.prior:
            errors.append(
                f"noise.value={self.noise.plain_value} is a range with noise_params=sigma_known and "
                "data.add_noise=false: the true level of each noisy file is unknown. Give the one known value "
                "(noise.value=25) or learn it (noise_params=sigma_global or sigma_per_image)"
            )
        return errors

    def _length_errors(self) -> list[str]:
        """The run's length (``train``, ``trainer.max_steps``, a curriculum) and where it resumes from."""
        errors: list[str] = []
        batch, images, minutes = self.data.batch_size, self.train.images, self.train.minutes
        in_images = self.trainer.length_in_images
        if minutes is not None and not in_images:
            errors.append(
                f"train.minutes={minutes} and trainer.max_steps={self.trainer.max_steps} both set the run length; "
                "keep one (trainer.max_steps=null)"
            )
        elif minutes is None and in_images and (images <= 0 or images % batch):
            errors.append(f"train.images={images} must be a positive multiple of data.batch_size={batch}")
        if self.data.curriculum and not in_images:
            errors.append(
                f"data.curriculum with trainer.max_steps={self.trainer.max_steps}: its stages differ in batch size, "
                "so the run is counted in images; set train.images (or train.minutes) and trainer.max_steps=null"
            )
        if self.resume not in (None, "auto") and not Path(str(self.resume)).is_file():
            errors.append(f"resume={self.resume}: no such checkpoint file (use null, auto, or a .ckpt path)")
        return errors
