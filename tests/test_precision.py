"""precision=auto: bf16 only where the CPU computes it natively (ssdn/training/precision.py says why); fp32
evaluation."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from ssdn.training.module import DenoiserModule
from ssdn.training.precision import cpu_flags, resolve_precision
from tests.conftest import TINY, compose_config


def test_auto_picks_bf16_only_with_native_bf16_on_cpu() -> None:
    assert resolve_precision("auto", "cpu", frozenset({"avx2", "avx512f", "avx512_bf16"})) == "bf16-mixed"
    assert resolve_precision("auto", "cpu", frozenset({"avx2", "amx_bf16"})) == "bf16-mixed"
    assert resolve_precision("auto", "cpu", frozenset({"avx2", "avx512f"})) == "32-true"
    assert resolve_precision("auto", "cpu", frozenset()) == "32-true"
    assert resolve_precision("auto", "gpu", frozenset()) == "bf16-mixed"


def test_an_explicit_precision_is_kept() -> None:
    for value in ("32-true", "bf16-mixed", "16-mixed"):
        assert resolve_precision(value, "cpu", frozenset()) == value


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == frozenset({"fpu", "avx2", "avx512_bf16"})
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_denoise_runs_fp32_unless_bf16_is_asked_for(tmp_path: Path) -> None:
    """The authors evaluate in fp32; bf16 is an explicit option (``eval_bf16`` / ``evaluate --bf16``)."""
    module = DenoiserModule(
        OmegaConf.to_container(compose_config(*TINY, output_dir=tmp_path), resolve=True, enum_to_str=True)
    )
    module.eval()
    noisy = torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    params = torch.tensor([25.0], dtype=torch.float64)
    fp32, bf16 = module.denoise(noisy, params, bf16=False), module.denoise(noisy, params, bf16=True)
    default = module.denoise(noisy, params)
    assert all(torch.equal(default[k], fp32[k]) for k in fp32)
    assert not all(torch.equal(bf16[k], fp32[k]) for k in fp32)
    module.eval_bf16 = True
    asked = module.denoise(noisy, params)
    assert all(torch.equal(asked[k], bf16[k]) for k in bf16)
