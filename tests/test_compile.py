"""compile=true: the compiled network computes what the eager one does, and compiler failures fall back to eager."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor

from ssdn.nets import CompiledForward, UNet
from ssdn.training.module import DenoiserModule
from tests.conftest import TINY, compose_config


def _input(size: int = 32) -> Tensor:
    return torch.rand((1, 3, size, size), generator=torch.Generator().manual_seed(0))


def _failing_backend(*args: object, **kwargs: object) -> None:
    raise RuntimeError("no compiler here")


def test_a_compiler_failure_warns_once_and_runs_eagerly() -> None:
    net = UNet(3, 9, blindspot=True).eval()
    call = CompiledForward(net, backend=_failing_backend)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="torch.compile failed"):
        out = call(_input())
    assert call.eager
    with torch.no_grad():
        assert torch.equal(out, net(_input()))
        assert torch.equal(call(_input()), out)  # no second attempt, no second warning


def test_a_copy_shares_nothing_compiled_and_keeps_the_weights_names(tmp_path: Path) -> None:
    config = OmegaConf.to_container(
        compose_config(*TINY, "compile=true", output_dir=tmp_path), resolve=True, enum_to_str=True
    )
    module = DenoiserModule(config)
    assert module.compiled is not None
    twin = copy.deepcopy(module)
    assert twin.compiled is not None and twin.compiled.net is twin.net
    assert module.state_dict().keys() == DenoiserModule({**config, "compile": False}).state_dict().keys()


@pytest.mark.slow
def test_compiled_output_matches_eager_on_cpu(tmp_path: Path) -> None:
    """fp32 on CPU: inductor reorders sums, so outputs agree to ~1e-6, not bit for bit; 1e-4 is asserted."""
    config = OmegaConf.to_container(
        compose_config(*TINY, "compile=true", output_dir=tmp_path), resolve=True, enum_to_str=True
    )
    module = DenoiserModule(config).eval()
    x = _input()
    with torch.no_grad():
        compiled, eager = module(x), module.net(x.contiguous(memory_format=torch.channels_last))
    assert module.compiled is not None and not module.compiled.eager
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
