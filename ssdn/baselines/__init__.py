"""Classical baselines of the paper: CBM3D (known or Chen-estimated σ) and Anscombe + BM3D for Poisson noise.

They need the optional ``bm3d`` package (``pip install 'ssdn[bm3d]'``, non-commercial licence), imported only
when a baseline is constructed.
"""

from ssdn.baselines.anscombe import AnscombeBM3D, anscombe, inverse_anscombe_unbiased
from ssdn.baselines.cbm3d import CBM3D, require_bm3d
from ssdn.baselines.chen import estimate_sigma

__all__ = ["CBM3D", "AnscombeBM3D", "anscombe", "estimate_sigma", "inverse_anscombe_unbiased", "require_bm3d"]
