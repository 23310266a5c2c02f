"""Classical baselines of the paper: CBM3D (known or Chen-estimated σ) and Anscombe + BM3D for Poisson noise.

They need the optional ``bm3d`` package (``pip install 'ssdn[bm3d]'``, non-commercial licence), imported only
when a baseline is constructed. ``build_baseline(name)`` makes one by its config name (``method.classical``,
``python -m ssdn.evaluate --method``).
"""

from __future__ import annotations

from collections.abc import Callable

from ssdn.baselines.anscombe import AnscombeBM3D, anscombe, inverse_anscombe_unbiased
from ssdn.baselines.cbm3d import CBM3D, require_bm3d

__all__ = [
    "BASELINES",
    "CBM3D",
    "AnscombeBM3D",
    "anscombe",
    "build_baseline",
    "inverse_anscombe_unbiased",
    "require_bm3d",
]

#: Config name -> constructor taking the worker thread count (the denoisers of the evaluator).
BASELINES: dict[str, Callable[[int], CBM3D | AnscombeBM3D]] = {
    "cbm3d_known": lambda threads: CBM3D(sigma="known", threads=threads),
    "cbm3d_estimated": lambda threads: CBM3D(sigma="estimated", threads=threads),
    "anscombe": lambda threads: AnscombeBM3D(threads=threads),
}


def build_baseline(name: str, threads: int = 1) -> CBM3D | AnscombeBM3D:
    """E.g. ``build_baseline("cbm3d_known")``; needs the optional ``bm3d`` package."""
    try:
        make = BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown classical method {name!r}; valid names: {', '.join(BASELINES)}") from None
    return make(threads)
