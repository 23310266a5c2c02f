"""Run-config helpers: the resolvers that name runs as the authors do, and validation that rejects invalid
combinations before any training starts, with a message that says what to change."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ssdn.config.schema import register_configs
from ssdn.data.curriculum import CropSchedule, as_stages, curriculum_errors
from ssdn.errors import UserError
from ssdn.nets.unet import SIDE_MULTIPLE

#: Overrides the packaged config folder (``ssdn/conf``) as a whole; to add experiments, extend the search path.
CONF_DIR_ENV = "SSDN_CONF_DIR"

NOISE_TAGS = {"gaussian": "gauss", "poisson": "poisson", "impulse": "impulse", "poisson_gaussian": "pg"}


class ConfigError(UserError, ValueError):
    """An invalid run configuration; the message lists every problem and the setting to change."""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def noise_tag(name: str, value: Any) -> str:
    """The authors' noise names: ``gauss25``, ``gauss5_50``, ``poisson30``, ``impulse50``, ``impulse0_100``;
    multi-parameter noise names each entry: ``pg_a0.01_b0.000384``, ``pg_a0.001_0.02_b0.000384``."""
    prefix = NOISE_TAGS.get(name, name)
    if isinstance(value, Mapping | DictConfig):
        return "_".join([prefix, *(f"{key}{noise_tag('', v)}" for key, v in value.items())])
    scale = 100.0 if name == "impulse" else 1.0
    if isinstance(value, Sequence | ListConfig) and not isinstance(value, str):
        low, high = (float(v) * scale for v in value)
        return f"{prefix}{_num(low)}_{_num(high)}"
    return f"{prefix}{_num(float(value) * scale)}"


def row_name(name: str, value: Any, method_tag: str, objective: str, params_tag: str, channels: int) -> str:
    """Run name in the authors' scheme: ``<noise>-<method>[-sigma_<source>][-mono]``.

    The noise-parameter suffix appears only for methods that use a noise level (the prior objective).
    """
    parts = [noise_tag(name, value), method_tag]
    if objective == "prior":
        parts.append(params_tag)
    if int(channels) == 1:
        parts.append("mono")
    return "-".join(parts)


def register_resolvers() -> None:
    """Register the ``ssdn_*`` OmegaConf resolvers and the config schema (idempotent); call before Hydra
    composes a config."""
    from ssdn.training.hydra_job import num_gpus

    register_configs()
    if not OmegaConf.has_resolver("ssdn_noise_tag"):
        OmegaConf.register_new_resolver("ssdn_noise_tag", noise_tag)
    if not OmegaConf.has_resolver("ssdn_row"):
        OmegaConf.register_new_resolver("ssdn_row", row_name)
    if not OmegaConf.has_resolver("ssdn_num_gpus"):  # launcher configs; resolved before any job runs
        OmegaConf.register_new_resolver("ssdn_num_gpus", num_gpus)


def prepare_hydra() -> None:
    """Everything Hydra needs before it composes our config, done on demand rather than at import, so that
    importing any ``ssdn`` module changes no global state. Idempotent; called by ``main()`` and ``compose()``."""
    register_resolvers()


def conf_dir() -> Path:
    """The primary config folder: ``$SSDN_CONF_DIR`` when set, else the ``conf`` folder inside the installed
    ``ssdn`` package (found through ``importlib.resources``, so a wheel install works from any directory)."""
    override = os.environ.get(CONF_DIR_ENV)
    if override:
        path = Path(override).expanduser().resolve()
        if not (path / "config.yaml").is_file():
            raise ConfigError(
                f"{CONF_DIR_ENV}={override}: no config.yaml there; point it at a copy of ssdn/conf or unset it"
            )
        return path
    return Path(str(files("ssdn").joinpath("conf")))


def container(cfg: DictConfig, *, enum_to_str: bool = False) -> dict[str, Any]:
    """``cfg`` resolved into plain dicts and lists, typed as the string-keyed mapping a config section is
    (OmegaConf types the result as any container with any key type)."""
    out = OmegaConf.to_container(cfg, resolve=True, enum_to_str=enum_to_str)
    if not isinstance(out, dict):
        raise ConfigError(f"expected a mapping of settings, got a {type(out).__name__}: {out}")
    return {str(key): value for key, value in out.items()}


def _length_in_images(cfg: DictConfig) -> bool:
    """True when the run length comes from ``train.images`` (``trainer.max_steps`` null or ≤ 0)."""
    steps = cfg.trainer.get("max_steps")
    return steps is None or int(steps) <= 0


def max_steps(cfg: DictConfig) -> int:
    """Training length in optimizer steps: ``trainer.max_steps`` if set, else ``train.images / data.batch_size``
    (with a crop-size curriculum, the steps of its stages' batches); -1 (unbounded) with ``train.minutes``,
    whose run stops itself when its planned images are reached."""
    if cfg.train.get("minutes") is not None:
        return -1
    if _length_in_images(cfg):
        stages = as_stages(cfg.data.get("curriculum"))
        if stages:
            schedule = CropSchedule(stages, int(cfg.data.crop_size), int(cfg.data.batch_size))
            return schedule.steps_for(int(cfg.train.images))
        return int(cfg.train.images) // int(cfg.data.batch_size)
    return int(cfg.trainer.max_steps)


def world_size(cfg: DictConfig) -> int:
    devices = cfg.trainer.get("devices", 1)
    n = (
        len(devices)
        if isinstance(devices, Sequence | ListConfig) and not isinstance(devices, str)
        else devices
    )
    if n in ("auto", -1, "-1"):
        return 1
    return int(n) * int(cfg.trainer.get("num_nodes", 1))


def _noise_errors(cfg: DictConfig) -> list[str]:
    from ssdn.noise import build_noise

    value = cfg.noise.value
    # loosely typed by OmegaConf; build_noise checks the value's shape itself and says what is wrong
    plain: Any = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
    try:
        build_noise(cfg.noise.name, plain)
    except (ValueError, KeyError) as exc:
        return [f"noise: {exc}"]
    return []


def _method_errors(cfg: DictConfig) -> list[str]:
    m, crop = cfg.method, int(cfg.data.crop_size)
    errors: list[str] = []
    if m.objective == "prior" and m.prior == "diagonal" and int(cfg.channels) == 1:
        errors.append(
            f"method={m.name} with channels=1: a diagonal Σ is the full Σ for mono images; use method=ssdn"
        )
    if m.masking is not None and crop % int(m.mask_cell):
        errors.append(f"data.crop_size={crop} is not divisible by method.mask_cell={m.mask_cell}")
    for i, stage in enumerate(cfg.data.get("curriculum") or []):
        if OmegaConf.is_missing(stage, "crop_size"):
            continue  # reported by _curriculum_errors
        if m.masking is not None and int(stage.crop_size) % int(m.mask_cell):
            errors.append(
                f"data.curriculum[{i}].crop_size={stage.crop_size} is not divisible by method.mask_cell={m.mask_cell}"
            )
    if cfg.data.fixed_noise and m.target == "second_noisy":
        errors.append(
            f"data.fixed_noise=true with method={m.name}: N2N needs two noisy copies; use fixed_noise=false"
        )
    return errors


def noisy_target_methods(folder: Path | None = None) -> list[str]:
    """The trainable methods whose target is the noisy input itself, i.e. that can train on noisy data alone
    (``folder``: the config folder, default ``conf_dir()``)."""
    from ssdn.config.schema import MethodConfig

    names = []
    for path in sorted(((folder or conf_dir()) / "method").glob("*.yaml")):
        entry = OmegaConf.load(path)
        if not isinstance(entry, DictConfig):
            raise ConfigError(f"{path}: a method config must be a mapping of settings, not a list")
        if entry.get("classical") is None and entry.get("target", MethodConfig.target) == "noisy":
            names.append(path.stem)
    return names


def _noisy_data_errors(cfg: DictConfig) -> list[str]:
    """``data.add_noise=false``: the images are the observations, so nothing may need a clean or 2nd copy."""
    d, m = cfg.data, cfg.method
    errors: list[str] = []
    if d.get("add_noise", True):
        return errors
    if m.target != "noisy":
        errors.append(
            f"method={m.name} trains against {m.target} targets, which data.add_noise=false (noisy images only) "
            f"cannot supply; methods that train on noisy data alone: {', '.join(noisy_target_methods())}"
        )
    if d.fixed_noise:
        errors.append(
            "data.fixed_noise=true has no meaning with data.add_noise=false (no noise is added); set "
            "data.fixed_noise=false"
        )
    value = cfg.noise.value
    ranged = OmegaConf.is_list(value) or (
        OmegaConf.is_dict(value) and any(OmegaConf.is_list(v) for v in value.values())
    )
    if ranged and cfg.noise_params.source == "known" and m.objective == "prior":
        errors.append(
            f"noise.value={OmegaConf.to_object(value)} is a range with noise_params=sigma_known and "
            "data.add_noise=false: the true level of each noisy file is unknown. Give the one known value "
            "(noise.value=25) or learn it (noise_params=sigma_global or sigma_per_image)"
        )
    return errors


def _training_errors(cfg: DictConfig) -> list[str]:
    d, errors = cfg.data, []
    crop, val_size = int(d.crop_size), int(d.val_size)
    if crop < SIDE_MULTIPLE or crop % SIDE_MULTIPLE:
        errors.append(
            f"data.crop_size={crop}: the U-Net needs a multiple of {SIDE_MULTIPLE} (e.g. 64 or 256)"
        )
    if val_size < SIDE_MULTIPLE or val_size % SIDE_MULTIPLE:
        errors.append(f"data.val_size={val_size}: use a multiple of {SIDE_MULTIPLE}")
    batch, world = int(d.batch_size), world_size(cfg)
    if batch < 1 or batch % world:
        errors.append(
            f"data.batch_size={batch} must be a positive multiple of the world size {world} "
            "(it is the global batch, split across ranks)"
        )
    images, minutes = int(cfg.train.images), cfg.train.get("minutes")
    if minutes is not None:
        if float(minutes) <= 0:
            errors.append(f"train.minutes={minutes} must be positive (or null to train for train.images)")
        if not _length_in_images(cfg):
            errors.append(
                f"train.minutes={minutes} and trainer.max_steps={cfg.trainer.max_steps} both set the run length; "
                "keep one (trainer.max_steps=null)"
            )
    elif _length_in_images(cfg) and (images <= 0 or images % batch):
        errors.append(f"train.images={images} must be a positive multiple of data.batch_size={batch}")
    errors += _curriculum_errors(cfg)
    if cfg.resume not in (None, "auto") and not Path(str(cfg.resume)).is_file():
        errors.append(f"resume={cfg.resume}: no such checkpoint file (use null, auto, or a .ckpt path)")
    return errors


def _curriculum_errors(cfg: DictConfig) -> list[str]:
    """``data.curriculum``: its stages, and a run length counted in images (stages differ in batch size)."""
    given = cfg.data.get("curriculum") or []
    missing = [
        f"data.curriculum[{i}].{k}" for i, s in enumerate(given) for k in s if OmegaConf.is_missing(s, k)
    ]
    if missing:
        return [f"{', '.join(missing)} not set: each stage needs until, crop_size and batch_size"]
    stages = as_stages(given)
    if not stages:
        return []
    errors = curriculum_errors(stages, world_size(cfg))
    if not _length_in_images(cfg):
        errors.append(
            f"data.curriculum with trainer.max_steps={cfg.trainer.max_steps}: its stages differ in batch size, so "
            "the run is counted in images; set train.images (or train.minutes) and trainer.max_steps=null"
        )
    return errors


def validate_config(cfg: DictConfig) -> None:
    """Check what the schema (``ssdn.config.schema``) cannot: combinations of settings. Raise ``ConfigError`` listing
    every problem found, each with the setting to change."""
    errors: list[str] = []
    channels = int(cfg.channels)
    if channels not in (1, 3):
        errors.append(f"channels={channels}: use 3 (RGB) or 1 (mono)")
    errors += _noise_errors(cfg)
    if cfg.method.get("classical"):
        if not cfg.eval.sets:
            errors.append(
                f"method={cfg.method.name} is evaluation-only: set eval.sets, e.g. eval.sets=[kodak]"
            )
    else:
        errors += _method_errors(cfg) + _noisy_data_errors(cfg) + _training_errors(cfg)
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))


def compose(*overrides: str, output_dir: str | Path | None = None) -> DictConfig:
    """Compose ``ssdn/conf/config.yaml`` as ``python train.py OVERRIDES`` would, outside a Hydra app.

    For programmatic runs (``ssdn.train.run(compose(...))``), tests and benchmarks; ``output_dir`` replaces
    the Hydra run directory, which only exists inside a Hydra app. ``hydra.searchpath=[file:///my/confs]``
    among the overrides adds config folders, as on the command line.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    prepare_hydra()
    extra = [f"output_dir={output_dir}"] if output_dir is not None else []
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[*overrides, *extra])
