"""Training methods of the paper: the blind-spot Bayesian method, its ablations and the baselines."""

from ssdn.methods.levels import LEVEL_SOURCES, LevelSource, build_level_source
from ssdn.methods.method import Method, StepBatch, build_method
from ssdn.methods.objectives import MeanObjective, Objective, PriorObjective

__all__ = [
    "LEVEL_SOURCES",
    "LevelSource",
    "MeanObjective",
    "Method",
    "Objective",
    "PriorObjective",
    "StepBatch",
    "build_level_source",
    "build_method",
]
