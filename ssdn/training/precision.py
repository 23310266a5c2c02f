"""Which training precision a machine should use when the config says ``trainer.precision=auto``.

Why: bf16 autocast is 2–4× faster than fp32 on CPUs that compute bf16 natively (AVX-512 BF16, AMX), but on
CPUs without it (AVX2-only, e.g. many AMD EPYC and laptop parts) oneDNN emulates bf16 and a blind-spot step
is about 10× *slower* than fp32 (measured on a 2-core AVX2 EPYC, 128², batch 2: 42 CPU-s against 3.6 CPU-s).
"""

from __future__ import annotations

from pathlib import Path

from ssdn.errors import UserError

#: CPU flags (Linux ``/proc/cpuinfo``) of native bf16 arithmetic.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags; empty where the kernel does not publish them (then no native bf16 is assumed)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


#: Lightning's precisions (with their short aliases), and ``auto``.
PRECISIONS = (
    "auto",
    "32-true",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "32",
    "bf16",
    "16",
    "64",
)


def resolve_precision(precision: str, accelerator: str, flags: frozenset[str] | None = None) -> str:
    """``auto`` → ``bf16-mixed`` on accelerators and on CPUs with native bf16, ``32-true`` on other CPUs; any
    other value is returned as given (an explicit choice is never second-guessed), or refused when Lightning has
    no such precision."""
    if precision not in PRECISIONS:
        raise UserError(
            f"trainer.precision={precision} is not a precision; choose one of {', '.join(PRECISIONS)}"
        )
    if precision != "auto":
        return precision
    if accelerator != "cpu":
        return "bf16-mixed"
    return "bf16-mixed" if NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags) else "32-true"
