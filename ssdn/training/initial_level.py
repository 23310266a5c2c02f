"""The training run's side of a learned level's data-driven start (``noise_params.init``): which images, when,
and what is logged. The estimate itself and why it helps: ``ssdn.methods.levels.initialise_from_data``.

``init=paper`` keeps the authors' 4.9/255, which the paper's rows use; a noise model without a classical
estimator (impulse) also keeps it, with a warning. The channel-correlated Gaussian model's own estimate already
measures the noise past its spatial correlation (``ssdn.noise.correlation``), so it needs no special case here.
Every DDP rank computes the same value from the same files and seed (``DenoisingDataModule.estimation_images``).
"""

from __future__ import annotations

import logging

import torch

from ssdn.config.schema import LevelInit
from ssdn.data.crops import ESTIMATION_IMAGES
from ssdn.data.datamodule import DenoisingDataModule
from ssdn.methods.levels import initialise_at, initialise_from_data
from ssdn.training.module import DenoiserModule

log = logging.getLogger(__name__)


def initialise_level(
    init: LevelInit,
    module: DenoiserModule,
    datamodule: DenoisingDataModule,
    correlated_sigma: float | None = None,
) -> dict[str, float]:
    """With ``init`` (``noise_params.init``) ``data`` and a learned level, start it at the data's estimate (paper
    units, returned and logged): for a Gaussian model at ``correlated_sigma`` when given (the noise's σ that
    ``ssdn.training.noise_check`` measured because it is spatially correlated). Otherwise leave the module
    unchanged and return ``{}``."""
    source = module.method.level_source
    if init != LevelInit.data or source is None or not source.learned:
        return {}
    if correlated_sigma is not None and module.noise.param_names == ("sigma",):
        # Chen's PCA estimate reads spatially correlated noise as image structure and lands far too low (3.6
        # against a true 16 on the simulated camera set, bench/README.md); the correlation measurement's σ is
        # the noise's own per-pixel std, which a Gaussian level is.
        estimate = initialise_at(source, module.noise, torch.tensor(correlated_sigma, dtype=torch.float64))
        log.info("initial level from the noise-correlation measurement: sigma = %.6g", correlated_sigma)
        return estimate
    try:
        estimate = initialise_from_data(source, module.noise, datamodule.estimation_images(ESTIMATION_IMAGES))
    except ValueError as exc:  # a noise model without a classical estimator (impulse) says so
        log.warning("%s; the learned level starts at the authors' value", exc)
        return {}
    log.info(
        "initial level from the data: %s",
        ", ".join(f"{name} = {value:.6g}" for name, value in estimate.items()),
    )
    return estimate
