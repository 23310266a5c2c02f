"""Hydra configs: every group option composes and validates; run names follow the authors' scheme; a wrong type
or value fails at composition (the schema) and invalid combinations before training, naming the setting.
The experiment rows are composed and validated in test_experiments.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from ssdn.baselines import BASELINES
from ssdn.config import schema
from ssdn.config.compose import ConfigError, noise_tag, prepare_hydra, row_name, validate_config
from ssdn.config.run import section
from ssdn.methods import build_method
from ssdn.methods.levels import LEVEL_SOURCES, build_level_source
from ssdn.methods.masking import mask_pixels
from ssdn.methods.objectives import MeanObjective, PriorObjective
from ssdn.noise import build_noise

CONF = Path(__file__).resolve().parents[1] / "ssdn" / "conf"


@pytest.fixture(autouse=True)
def _hydra_ready() -> None:
    prepare_hydra()


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
        (
            "gaussian_channels",
            {"sigma_r": 10, "sigma_g": 6.2, "sigma_b": 11, "sigma_common": [5, 20]},
            "gch_sigma_r10_sigma_g6.2_sigma_b11_sigma_common5_20",
        ),
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


@pytest.mark.parametrize("group", ["noise", "method", "noise_params", "model", "trainer", "logger"])
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


def test_dense_masking_recipe_is_selectable_and_overridable() -> None:
    cfg = _compose("method=n2v_random_dense")
    assert (cfg.method.masking, cfg.method.mask_cell, cfg.method.blindspot) == ("random", 4, False)
    assert cfg.optim.lr == 1e-3 and cfg.ema.enabled and cfg.schedule.rampdown == 0.0
    assert cfg.run.name == "gauss25-masking_random_dense"
    assert _compose("method=n2v_random_dense", "optim.lr=3e-4").optim.lr == 3e-4


def test_sweep_subdir_names_jobs_by_row() -> None:
    cfg = _compose("noise=poisson")
    subdir = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"]  # type: ignore[index]
    assert subdir == "${hydra.job.num}-${run.name}"
    assert cfg.run.name == "poisson30-blindspot-sigma_known"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=ssdn_diag", "channels=1"], "method=ssdn_diag with channels=1"),
        (["noise=gaussian_channels", "channels=1"], "noise=gaussian_channels with channels=1"),
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


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.crop_size=abc", "crop_size"),
        ("noise_params.source=foo", "source"),
        ("logger.kind=x", "kind"),
        ("method.objective=likelihood", "objective"),
        ("method.masking=blur", "masking"),
        ("trainer.max_steps=1.5", "max_steps"),
    ],
)
def test_schema_rejects_a_wrong_type_or_value_at_composition(override: str, key: str) -> None:
    with pytest.raises(ConfigCompositionException, match=re.escape(override)) as err:
        _compose(override)
    cause = str(err.value.__cause__)
    assert key in cause and ("Invalid value" in cause or "Value '" in cause)


def test_enum_values_are_the_values_the_code_accepts() -> None:
    """The schema's Enums are the single list: the methods accept each value and refuse any other."""
    noise = build_noise("gaussian", 25)
    for target in schema.Target:
        for objective in schema.Objective:
            method = build_method(
                schema.MethodConfig(name="m", target=target, objective=objective), noise, 3, "known"
            )
            assert method.target is target and method.objective.uses_level == (
                objective is schema.Objective.prior
            )
    assert {PriorObjective(p).kind.value for p in schema.Prior} == {"full", "diagonal"}
    assert set(schema.REGRESSION_LOSSES) == {loss.value for loss in schema.Loss} - {"auto"}
    assert {MeanObjective(loss).loss for loss in schema.REGRESSION_LOSSES} == set(schema.REGRESSION_LOSSES)
    with pytest.raises(ValueError, match=r"method\.loss"):
        MeanObjective("auto")
    noisy = torch.rand((1, 3, 8, 8))
    coords = (torch.tensor([[3]]), torch.tensor([[4]]))
    for strategy in schema.Masking:
        assert mask_pixels(noisy, *coords, strategy, torch.Generator().manual_seed(0)).shape == noisy.shape
    with pytest.raises(ValueError, match=r"method.masking='blur'"):
        mask_pixels(noisy, *coords, "blur", torch.Generator())
    assert set(schema.LevelSourceName) == set(LEVEL_SOURCES)
    assert {build_level_source(s, 3).name for s in schema.LevelSourceName} == set(LEVEL_SOURCES)
    assert set(schema.Classical) == set(BASELINES)
    # OmegaConf converts a string to an Enum by member name: names must be the values.
    for enum in (
        schema.Target,
        schema.Objective,
        schema.Prior,
        schema.Loss,
        schema.Masking,
        schema.Classical,
    ):
        assert [m.name for m in enum] == [m.value for m in enum]
    assert [m.name for m in schema.LevelSourceName] == list(LEVEL_SOURCES)


@pytest.mark.parametrize(
    ("method", "noise", "name"),
    [
        ("cbm3d_known", "gaussian", "gauss25-cbm3d-sigma_known"),
        ("cbm3d_estimated", "gaussian_range", "gauss5_50-cbm3d-sigma_estimated"),
        ("anscombe", "poisson", "poisson30-anscombe"),
    ],
)
def test_classical_rows_carry_no_training_keys(method: str, noise: str, name: str) -> None:
    cfg = _compose(f"method={method}", f"noise={noise}", "eval.sets=[kodak]")
    assert set(cfg.method) == {"name", "tag", "classical", "workers"}
    assert cfg.method.classical == method and cfg.run.name == name
    validate_config(cfg)


def test_register_configs_is_idempotent() -> None:
    prepare_hydra()
    prepare_hydra()
    assert _compose("trainer=gpu").trainer.val_check_interval == 2500


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["method.blind_hole=2"],
            "method.blind_hole=2: the blind square's side is an odd number from 1 to 11",
        ),
        (
            ["method.blind_hole=0"],
            "method.blind_hole=0: the blind square's side is an odd number from 1 to 11",
        ),
        (
            ["method.blind_hole=13"],
            "method.blind_hole=13: the blind square's side is an odd number from 1 to 11",
        ),
        (
            ["method.blind_hole_infer=4"],
            "method.blind_hole_infer=4: the blind square's side is an odd number from 1 to 11",
        ),
        (
            ["method=n2c", "method.blind_hole_infer=3"],
            "method.blind_hole_infer=3 with method.blindspot=false: only the blind-spot net has a blind square",
        ),
        (["method=n2c", "method.blind_hole=3"], "method.blind_hole=3 with method.blindspot=false"),
        (["method.pd_stride=0"], "method.pd_stride=0: a downsampling stride is >= 1"),
        (["method.pd_stride_infer=0"], "method.pd_stride_infer=0: a downsampling stride is >= 1, or null"),
    ],
)
def test_method_blind_hole_and_pd_stride_are_checked_in_their_section(
    overrides: list[str], message: str
) -> None:
    cfg = _compose(*overrides)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_method_defaults_and_valid_blind_hole_and_strides() -> None:
    method = validate_config(_compose()).trained
    assert (method.blind_hole, method.pd_stride, method.pd_stride_infer) == (1, 1, None)
    method = validate_config(
        _compose("method.blind_hole=3", "method.pd_stride=2", "method.pd_stride_infer=1")
    ).trained
    assert (method.blind_hole, method.pd_stride, method.pd_stride_infer) == (3, 2, 1)


def test_every_problem_is_listed_on_one_line_naming_its_key() -> None:
    cfg = _compose("channels=2", "data.val_size=40", "data.num_workers=-1", "train.images=801")
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    message = str(err.value)
    assert "\n" not in message and message.startswith("invalid configuration: ")
    for key in ("channels=2", "data.val_size=40", "data.num_workers=-1", "train.images=801"):
        assert key in message


def test_the_run_config_is_typed_once() -> None:
    """Sections are their schema dataclasses, with Enums; the record is the same config as plain values."""
    run = validate_config(
        _compose("method=n2v_copy", "data.curriculum=[{until: 0.5, crop_size: 64, batch_size: 4}]")
    )
    assert isinstance(run.data, schema.DataConfig) and isinstance(run.trainer, schema.TrainerConfig)
    assert run.trained.masking is schema.Masking.copy and run.trained.objective is schema.Objective.mean
    assert run.data.curriculum == [schema.CropStage(0.5, 64, 4)] and run.data.largest_crop == 128
    assert run.record["method"]["masking"] == "copy" and "hydra" not in run.record
    assert run.output_dir is None  # composed outside a Hydra app


def test_a_stored_config_section_is_read_back_typed_or_refused_naming_the_key() -> None:
    """A checkpoint's config is plain values: read back through the schema, a wrong value names its key."""
    method = section(schema.MethodConfig, {"name": "ssdn", "tag": "blindspot", "prior": "diagonal"}, "method")
    assert method.prior is schema.Prior.diagonal and method.blind_hole == 1  # a key added since: its default
    with pytest.raises(ConfigError, match=r"^method\.objective: Invalid value 'likelihood'") as err:
        section(schema.MethodConfig, {"name": "x", "tag": "t", "objective": "likelihood"}, "method")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^method\.tag not set$"):
        section(schema.MethodConfig, {"name": "x"}, "method")
