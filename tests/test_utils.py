"""Allocator tuning: with glibc keeping freed memory, training steps stop page-faulting on large activations."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from ssdn.utils import keep_freed_memory

_FAULTS = """
import resource, sys, torch
from ssdn.utils import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
torch.set_num_threads(1)
conv = torch.nn.Conv2d(16, 16, 3, padding=1)
x = torch.randn(4, 16, 256, 256)  # 16 MB activations and gradients: glibc maps such blocks afresh
def step():
    conv(x).relu().square().mean().backward()
for _ in range(6):  # warm-up: the tuned heap grows for a few steps until it holds a whole step
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):  # the steady state, summed: a default step sometimes reuses a mapping, never all four
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_keep_freed_memory_removes_page_faults_of_repeated_large_blocks() -> None:
    faults = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", _FAULTS, mode], check=True, capture_output=True, text=True
            ).stdout.split()[-1]
        )
        for mode in ("default", "tuned")
    }
    pages = 16 * 2**20 // 4096  # of one activation
    assert faults["default"] > 2 * pages  # steps keep touching fresh pages
    assert faults["tuned"] < pages // 20


def test_keep_freed_memory_without_glibc_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc(name: str) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert keep_freed_memory() is False
