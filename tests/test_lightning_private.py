"""The private Lightning names of ``ssdn.training.lightning_private`` still exist with the signatures we call them with.

When one of these fails after a Lightning upgrade, ``ssdn/training/lightning_private.py`` (and the overrides
in ``ssdn/training/distributed.py``) must be adapted to the new Lightning before DDP training or resumed CSV logs
work again.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy

from ssdn.training import lightning_private as lp


def _params(func: object) -> list[str]:
    return list(inspect.signature(func).parameters)  # type: ignore[arg-type]


def _changed(what: str) -> str:
    import lightning

    return f"Lightning {lightning.__version__} changed {what}: adapt ssdn/training/lightning_private.py"


def test_subprocess_launcher_has_the_hooks_we_use() -> None:
    launcher = lp.SubprocessScriptLauncher
    assert _params(launcher.__init__) == ["self", "cluster_environment", "num_processes", "num_nodes"], (
        _changed("_SubprocessScriptLauncher.__init__")
    )
    assert _params(launcher.launch)[:2] == ["self", "function"], _changed("_SubprocessScriptLauncher.launch")
    assert _params(launcher._check_can_spawn_children) == ["self"], _changed("_check_can_spawn_children")


@pytest.mark.parametrize(("cls", "name"), lp.OVERRIDDEN_HOOKS, ids=[n for _, n in lp.OVERRIDDEN_HOOKS])
def test_overridden_hooks_exist(cls: type, name: str) -> None:
    assert callable(getattr(cls, name, None)), _changed(
        f"{cls.__name__}.{name} (ssdn.training.distributed overrides it)"
    )
    assert _params(getattr(cls, name)) == ["self"], _changed(f"the signature of {cls.__name__}.{name}")


def test_thread_count_helper_signature() -> None:
    from lightning.fabric.utilities.distributed import _set_num_threads_if_needed

    assert _params(_set_num_threads_if_needed) == ["num_processes"], _changed("_set_num_threads_if_needed")


def test_strategy_attributes() -> None:
    strategy = DDPStrategy()
    assert lp.strategy_start_method(strategy) == "popen", _changed("DDPStrategy._start_method")
    assert hasattr(strategy, "_launcher"), _changed("DDPStrategy._launcher")
    marker = object()
    lp.set_strategy_launcher(strategy, marker)
    assert strategy.launcher is marker, _changed("DDPStrategy._launcher (no longer what .launcher returns)")


def test_csv_experiment_is_none_until_created(tmp_path: Path) -> None:
    logger = CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    assert lp.csv_experiment(logger) is None, _changed("CSVLogger._experiment")
    writer = logger.experiment
    assert lp.csv_experiment(logger) is writer, _changed("CSVLogger._experiment")
