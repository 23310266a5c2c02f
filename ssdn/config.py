"""Run-config helpers: the resolvers that name runs as the authors do, and validation that rejects invalid
combinations before any training starts, with a message that says what to change."""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

#: Overrides the packaged config folder (``ssdn/conf``) as a whole; to add experiments, extend the search path.
CONF_DIR_ENV = "SSDN_CONF_DIR"

NOISE_TAGS = {"gaussian": "gauss", "poisson": "poisson", "impulse": "impulse"}


class ConfigError(ValueError):
    """An invalid run configuration; the message lists every problem and the setting to change."""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def noise_tag(name: str, value: Any) -> str:
    """The authors' noise names: ``gauss25``, ``gauss5_50``, ``poisson30``, ``impulse50``, ``impulse0_100``."""
    prefix = NOISE_TAGS.get(name, name)
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
    """Register the ``ssdn_*`` OmegaConf resolvers (idempotent); call before Hydra composes a config."""
    from ssdn.jobs import num_gpus

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


def max_steps(cfg: DictConfig) -> int:
    """Training length in optimizer steps: ``trainer.max_steps`` if set, else ``train.images / data.batch_size``."""
    steps = cfg.trainer.get("max_steps")
    if steps is not None and int(steps) > 0:
        return int(steps)
    return int(cfg.train.images) // int(cfg.data.batch_size)


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


def validate_config(cfg: DictConfig) -> None:
    """Check the combination of settings; raise ``ConfigError`` listing every problem found."""
    from ssdn.noise import build_noise

    errors: list[str] = []
    channels = int(cfg.channels)
    if channels not in (1, 3):
        errors.append(f"channels={channels}: use 3 (RGB) or 1 (mono)")
    try:
        build_noise(
            cfg.noise.name,
            OmegaConf.to_object(cfg.noise.value) if OmegaConf.is_config(cfg.noise.value) else cfg.noise.value,
        )
    except (ValueError, KeyError) as exc:
        errors.append(f"noise: {exc}")
    m = cfg.method
    if m.get("classical"):
        if not cfg.eval.sets:
            errors.append(f"method={m.name} is evaluation-only: set eval.sets, e.g. eval.sets=[kodak]")
        if errors:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
        return
    if m.objective == "prior" and m.prior == "diagonal" and channels == 1:
        errors.append(
            f"method={m.name} with channels=1: a diagonal Σ is the full Σ for mono images; use method=ssdn"
        )
    if m.objective not in ("prior", "mean"):
        errors.append(f"method.objective={m.objective!r}: use prior or mean")
    if cfg.noise_params.source not in ("known", "global", "per_image"):
        errors.append(f"noise_params.source={cfg.noise_params.source!r}: use known, global or per_image")
    d = cfg.data
    crop = int(d.crop_size)
    if crop < 32 or crop % 32:
        errors.append(f"data.crop_size={crop}: the U-Net needs a multiple of 32 (e.g. 64 or 256)")
    if m.masking is not None and crop % int(m.mask_cell):
        errors.append(f"data.crop_size={crop} is not divisible by method.mask_cell={m.mask_cell}")
    val_size = int(d.val_size)
    if val_size < 32 or val_size % 32:
        errors.append(f"data.val_size={val_size}: use a multiple of 32")
    batch, world = int(d.batch_size), world_size(cfg)
    if batch < 1 or batch % world:
        errors.append(
            f"data.batch_size={batch} must be a positive multiple of the world size {world} "
            "(it is the global batch, split across ranks)"
        )
    if d.fixed_noise and m.target == "second_noisy":
        errors.append(
            f"data.fixed_noise=true with method={m.name}: N2N needs two noisy copies; use fixed_noise=false"
        )
    steps = cfg.trainer.get("max_steps")
    if steps is None or int(steps) <= 0:
        images = int(cfg.train.images)
        if images <= 0 or images % batch:
            errors.append(f"train.images={images} must be a positive multiple of data.batch_size={batch}")
    if cfg.resume not in (None, "auto") and not Path(str(cfg.resume)).is_file():
        errors.append(f"resume={cfg.resume}: no such checkpoint file (use null, auto, or a .ckpt path)")
    if cfg.logger.kind not in ("wandb", "csv", "none"):
        errors.append(f"logger.kind={cfg.logger.kind!r}: use wandb, csv or none")
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
