"""Composing the run config: the resolvers that name runs as the authors do, composition outside a Hydra app,
and the one entry point that types and checks a composed config (``validate_config``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ssdn.config.folder import conf_dir
from ssdn.config.run import RunConfig
from ssdn.config.schema import ConfigError, register_configs

__all__ = ["ConfigError", "compose", "conf_dir", "noise_tag", "prepare_hydra", "row_name", "validate_config"]

NOISE_TAGS = {
    "gaussian": "gauss",
    "poisson": "poisson",
    "impulse": "impulse",
    "poisson_gaussian": "pg",
    "gaussian_channels": "gch",
}


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


def validate_config(cfg: DictConfig) -> RunConfig:
    """The composed config typed (``RunConfig``) and checked: a ``ConfigError`` names every setting to change
    (the schema checked types and allowed values at composition; this checks ranges and combinations)."""
    return RunConfig.from_dictconfig(cfg).check()


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
