"""The end-of-run example (ssdn.training.example): written for noise models of one and of several parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ssdn.config.schema import ExampleConfig
from ssdn.training.example import write_example
from ssdn.training.module import DenoiserModule
from tests.conftest import compose_config


@pytest.mark.parametrize(
    ("noise", "names"), [("gaussian", 1), ("poisson_gaussian", 2), ("gaussian_channels", 4)]
)
def test_example_records_every_parameter(noise: str, names: int, tmp_path: Path) -> None:
    channels = 3 if noise == "gaussian_channels" else 1
    cfg = compose_config(
        f"noise={noise}", "noise_params=sigma_global", f"channels={channels}", output_dir="x"
    )
    torch.manual_seed(0)
    module = DenoiserModule(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))  # type: ignore[arg-type]
    scores = write_example(ExampleConfig(size=32), module, tmp_path, seed=0, channels=channels)
    record = json.loads((tmp_path / "example.json").read_text())
    params = record["params"]
    assert isinstance(params, float) if names == 1 else len(params) == names
    assert record["psnr_noisy"] == scores["psnr_noisy"]
    assert {p.name for p in tmp_path.glob("example_*.png")} >= {"example_noisy.png", "example_clean.png"}
