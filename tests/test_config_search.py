"""Where the configs come from: the ``conf`` folder inside the installed package, ``$SSDN_CONF_DIR`` instead of
it, and users' own experiment files added through Hydra's search path without touching the package."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssdn.config.compose import ConfigError, compose, conf_dir

MY_EXPERIMENT = """\
# @package _global_
defaults:
  - override /noise: poisson
  - override /method: n2c

seed: 7
run:
  group: mine
"""


def test_conf_dir_is_the_package_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    import ssdn

    monkeypatch.delenv("SSDN_CONF_DIR", raising=False)
    assert conf_dir() == Path(ssdn.__file__).resolve().parent / "conf"
    assert (conf_dir() / "config.yaml").is_file()


def test_own_experiment_file_composes_by_name_through_the_search_path(tmp_path: Path) -> None:
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "my_run.yaml").write_text(MY_EXPERIMENT)
    cfg = compose(f"hydra.searchpath=[file://{tmp_path}]", "experiment=my_run", "logger=csv")
    assert (cfg.noise.name, cfg.method.name, cfg.seed, cfg.run.group) == ("poisson", "n2c", 7, "mine")
    assert cfg.run.name == "poisson30-n2c"
    packaged = compose(f"hydra.searchpath=[file://{tmp_path}]", "experiment=table1/gauss25-n2c")
    assert packaged.run.group == "table1"  # the packaged experiments stay reachable beside the user's


def test_conf_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.yaml").write_text("seed: 3\n")
    monkeypatch.setenv("SSDN_CONF_DIR", str(tmp_path))
    assert conf_dir() == tmp_path.resolve()
    assert compose().seed == 3
    monkeypatch.setenv("SSDN_CONF_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"SSDN_CONF_DIR=.*missing: no config\.yaml there"):
        conf_dir()
