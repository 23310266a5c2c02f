"""Where a learned noise level starts: a classical estimate from the training data (``noise_params.init``).

Why: the authors start every learned level at 4.9/255 and train for 2M images; a short run from that start
spends much of its budget walking the level to the truth. A classical estimator (``NoiseModel.estimate_params``)
on a few training images lands near the truth before the first step. ``init=paper`` keeps the authors' start,
which the paper's rows use; a noise model without a classical estimator (impulse) also keeps it, with a warning.
Every DDP rank computes the same value from the same files and seed.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from ssdn.config.schema import LevelInit
from ssdn.data.datamodule import DenoisingDataModule
from ssdn.training.module import DenoiserModule

log = logging.getLogger(__name__)

ESTIMATION_IMAGES = 32
"""Training images the initial estimate is computed from (the first ones of the sorted listing)."""


def initialise_level(
    cfg: DictConfig, module: DenoiserModule, datamodule: DenoisingDataModule
) -> dict[str, float]:
    """With ``noise_params.init=data`` and a learned level, start it at the data's estimate (paper units,
    returned and logged); otherwise leave the module unchanged and return ``{}``."""
    if cfg.noise_params.get("init", LevelInit.data) != LevelInit.data or not module.method.learned_level:
        return {}
    try:
        estimate = module.initialise_level(datamodule.estimation_images(ESTIMATION_IMAGES))
    except ValueError as exc:  # a noise model without a classical estimator (impulse) says so
        log.warning("%s; the learned level starts at the authors' value", exc)
        return {}
    log.info(
        "initial level from the data: %s",
        ", ".join(f"{name} = {value:.6g}" for name, value in estimate.items()),
    )
    return estimate
