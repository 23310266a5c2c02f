"""Every private Lightning name ssdn relies on, in this one module, so that a Lightning upgrade that changes
them breaks here, and ``tests/test_lightning_private.py`` says which name changed.

Why private names at all: the DDP launcher of ``ssdn.training.distributed`` must start its ranks from the Hydra job's
saved config instead of re-running ``sys.argv``, which Lightning only allows by subclassing its subprocess
launcher; and the resumable CSV log must know whether its writer exists yet. Subclasses in ``ssdn.training.distributed``
also override the private hooks listed in ``OVERRIDDEN_HOOKS`` (Lightning calls them by these names).
"""

from __future__ import annotations

from typing import Any, cast

from lightning.fabric.utilities.distributed import _set_num_threads_if_needed
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

#: Lightning's launcher that starts the extra local ranks as subprocesses (the base of ours).
SubprocessScriptLauncher = _SubprocessScriptLauncher

#: (class, private method) pairs that ``ssdn.training.distributed`` overrides: Lightning must still call them.
OVERRIDDEN_HOOKS: tuple[tuple[type, str], ...] = (
    (DDPStrategy, "_configure_launcher"),
    (_SubprocessScriptLauncher, "_call_children_scripts"),
)


def set_num_threads_if_needed(num_processes: int) -> None:
    """Lightning's per-rank torch thread count (``OMP_NUM_THREADS``), as its own launcher sets it."""
    _set_num_threads_if_needed(num_processes=num_processes)


def strategy_start_method(strategy: DDPStrategy) -> str:
    """How the strategy starts its ranks (``popen``, ``spawn``, ``fork``, ...)."""
    return strategy._start_method


def set_strategy_launcher(strategy: DDPStrategy, launcher: Any) -> None:
    """Install ``launcher`` as the strategy's launcher (what ``_configure_launcher`` must do)."""
    strategy._launcher = launcher


def check_can_spawn_children(launcher: _SubprocessScriptLauncher) -> None:
    """Lightning's guard against starting ranks from a process that is already a rank."""
    launcher._check_can_spawn_children()


def csv_experiment(logger: CSVLogger) -> ExperimentWriter | None:
    """The CSV logger's writer if it has been created already, else None (without creating it)."""
    # Fabric declares the attribute as its own _ExperimentWriter; the pytorch CSVLogger only ever stores its
    # ExperimentWriter subclass there.
    return cast("ExperimentWriter | None", logger._experiment)
