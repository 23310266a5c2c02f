"""precision=auto: bf16 only where the CPU computes it natively (ssdn/precision.py says why)."""

from __future__ import annotations

from pathlib import Path

from ssdn.precision import cpu_flags, resolve_precision


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
