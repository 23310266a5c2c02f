"""Hydra configs: every group option composes and validates; run names follow the authors' scheme; invalid
combinations fail before training with a message that names the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from ssdn.config import ConfigError, noise_tag, register_resolvers, row_name, validate_config

CONF = Path(__file__).resolve().parents[1] / "ssdn" / "conf"
register_resolvers()


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    ("name", "value", "tag"),
    [
        ("gaussian", 25, "gauss25"),
        ("gaussian", [5, 50], "gauss5_50"),
        ("poisson", 30, "poisson30"),
        ("poisson", [5, 50], "poisson5_50"),
        ("impulse", 0.5, "impulse50"),
        ("impulse", [0.0, 1.0], "impulse0_100"),
        ("poisson_gaussian", {"a": 0.01, "b": 0.000384}, "pg_a0.01_b0.000384"),
        ("poisson_gaussian", {"a": [0.001, 0.02], "b": 0.0}, "pg_a0.001_0.02_b0"),
    ],
)
def test_noise_tags(name: str, value: object, tag: str) -> None:
    assert noise_tag(name, value) == tag


def test_row_names() -> None:
    assert row_name("gaussian", 25, "blindspot", "prior", "sigma_known", 3) == "gauss25-blindspot-sigma_known"
    assert row_name("poisson", [5, 50], "n2n", "mean", "sigma_known", 3) == "poisson5_50-n2n"
    assert (
        row_name("gaussian", 25, "blindspot", "prior", "sigma_global", 1)
        == "gauss25-blindspot-sigma_global-mono"
    )


@pytest.mark.parametrize("group", ["noise", "method", "noise_params", "trainer", "logger"])
def test_every_option_composes_and_validates(group: str) -> None:
    for option in _options(group):
        extra = (
            ["eval.sets=[kodak]"] if (CONF / group / f"{option}.yaml").read_text().count("classical:") else []
        )
        cfg = _compose(f"{group}={option}", *extra)
        validate_config(cfg)
        assert cfg.run.name


def test_default_run_is_the_paper_method_on_gaussian_25() -> None:
    cfg = _compose()
    assert (cfg.noise.name, cfg.noise.value, cfg.method.name, cfg.noise_params.source) == (
        "gaussian",
        25,
        "ssdn",
        "known",
    )
    assert cfg.run.name == "gauss25-blindspot-sigma_known"
    assert cfg.data.train_dir == "skimage:train"


def test_masking_method_turns_ema_on_and_rampdown_off() -> None:
    cfg = _compose("method=n2v_random")
    assert cfg.ema.enabled and cfg.schedule.rampdown == 0.0
    assert not _compose("method=ssdn").ema.enabled


def test_sweep_subdir_names_jobs_by_row() -> None:
    cfg = _compose("noise=poisson")
    subdir = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"]  # type: ignore[index]
    assert subdir == "${hydra.job.num}-${run.name}"
    assert cfg.run.name == "poisson30-blindspot-sigma_known"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=ssdn_diag", "channels=1"], "method=ssdn_diag with channels=1"),
        (["noise.value=-5"], "sigma"),
        (["data.crop_size=48"], "data.crop_size=48"),
        (["data.batch_size=3", "trainer=ddp"], "data.batch_size=3"),
        (["method=n2n", "data.fixed_noise=true"], "fixed_noise"),
        (["noise.value=[50,5]"], "noise"),
        (["train.images=7"], "train.images=7"),
        (["resume=/nonexistent/last.ckpt"], "resume="),
        (["method=cbm3d_known"], "evaluation-only"),
    ],
)
def test_invalid_combinations_fail_with_a_clear_message(overrides: list[str], message: str) -> None:
    cfg = _compose(*overrides)
    with pytest.raises(ConfigError, match="invalid configuration") as err:
        validate_config(cfg)
    assert message in str(err.value)


def test_typos_get_hydras_error() -> None:
    with pytest.raises(ConfigCompositionException, match="noise"):
        _compose("noise=gausian")
    with pytest.raises(ConfigCompositionException, match="crop_sise"):
        _compose("data.crop_sise=64")


EXPERIMENTS = sorted(
    str(p.relative_to(CONF / "experiment").with_suffix("")) for p in (CONF / "experiment").rglob("*.yaml")
)


def test_experiment_rows_exist() -> None:
    assert len([e for e in EXPERIMENTS if e.startswith("table1/")]) == 14 + 4  # + CBM3D known/estimated ×2
    assert len([e for e in EXPERIMENTS if e.startswith("table3/")]) == 20 + 1  # + Anscombe


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_validates_and_is_named_after_its_file(experiment: str) -> None:
    cfg = _compose(f"experiment={experiment}")
    validate_config(cfg)
    assert cfg.run.name == Path(experiment).name
    assert cfg.method.get("classical") or cfg.data.crop_size == 256
