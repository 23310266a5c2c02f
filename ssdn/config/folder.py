"""The config folder: where the run config's YAML groups live, and what its method group offers."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssdn.config.schema import ConfigError, MethodConfig

#: Overrides the packaged config folder (``ssdn/conf``) as a whole; to add experiments, extend the search path.
CONF_DIR_ENV = "SSDN_CONF_DIR"


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


def noisy_target_methods(folder: Path | None = None) -> list[str]:
    """The trainable methods whose target is the noisy input itself, i.e. that can train on noisy data alone
    (``folder``: the config folder, default ``conf_dir()``)."""
    names = []
    for path in sorted(((folder or conf_dir()) / "method").glob("*.yaml")):
        entry = OmegaConf.load(path)
        if not isinstance(entry, DictConfig):
            raise ConfigError(f"{path}: a method config must be a mapping of settings, not a list")
        if entry.get("classical") is None and entry.get("target", MethodConfig.target) == "noisy":
            names.append(path.stem)
    return names
