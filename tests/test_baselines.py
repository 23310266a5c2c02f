"""ssdn.baselines: CBM3D (known / estimated σ), Anscombe + BM3D for Poisson."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import skimage.data
import torch

from ssdn.baselines.anscombe import (
    ZERO_COUNT_Z,
    AnscombeBM3D,
    anscombe,
    inverse_anscombe_unbiased,
)
from ssdn.baselines.cbm3d import CBM3D, require_bm3d
from ssdn.eval.metrics import psnr

pytest.importorskip("bm3d")


def _astronaut_crop(size: int = 64) -> torch.Tensor:
    """A textured 64² crop of scikit-image's astronaut (shipped in the wheel, no download)."""
    a = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 255
    return a[:, 100 : 100 + size, 200 : 200 + size].unsqueeze(0)


def _gauss(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return x + torch.randn(x.shape, generator=g) * sigma / 255


# ------------------------------------------------------------------------------------------------ CBM3D


def test_cbm3d_known_and_estimated_sigma() -> None:
    x = _astronaut_crop()
    y = _gauss(x, 25)
    params = torch.tensor([25.0], dtype=torch.float64)
    noisy_psnr = psnr(y, x).item()
    known = CBM3D("known").denoise(y, params)["out"]
    assert known.shape == x.shape and known.dtype == torch.float32
    assert psnr(known, x).item() > noisy_psnr + 8  # measured 20.34 → 30.49 dB

    est = CBM3D("estimated")
    assert est.name == "cbm3d-estimated" and est.requires_square_multiple is None
    assert est.sigmas(y, params)[0] * 255 == pytest.approx(25, abs=1.5)  # measured 24.08
    estimated = est.denoise(y, torch.tensor([999.0], dtype=torch.float64))["out"]  # params are ignored
    assert abs(psnr(estimated, x).item() - psnr(known, x).item()) < 0.3  # measured 30.40 vs 30.49

    mono = x.mean(dim=1, keepdim=True)
    out = CBM3D("known").denoise(_gauss(mono, 25), params)["out"]
    assert out.shape == mono.shape and psnr(out, mono).item() > psnr(_gauss(mono, 25), mono).item() + 5
    with pytest.raises(ValueError, match="sigma must be one of"):
        CBM3D("oracle")
    with pytest.raises(ValueError, match="profile must be one of"):
        AnscombeBM3D(profile="fast")


def test_bm3d_is_deterministic() -> None:
    """Single-threaded by default: bm3d's multi-threaded aggregation changes the 7th digit between runs."""
    y = _gauss(_astronaut_crop(32), 25)
    params = torch.tensor([25.0], dtype=torch.float64)
    first, second = (CBM3D().denoise(y, params)["out"] for _ in range(2))
    assert torch.equal(first, second)


def test_missing_bm3d_explains_install_and_licence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bm3d", None)  # makes `import bm3d` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'ssdn\[bm3d\]'.*non-commercial"):
        require_bm3d()
    with pytest.raises(ImportError, match="non-commercial"):
        CBM3D()


# ------------------------------------------------------------------------------------------------ Anscombe


def test_anscombe_inverse_exact_values() -> None:
    assert ZERO_COUNT_Z == pytest.approx(1.224744871391589)
    assert anscombe(np.array([0.0]))[0] == pytest.approx(ZERO_COUNT_Z)
    assert anscombe(np.array([-1e-9]))[0] == pytest.approx(ZERO_COUNT_Z)
    z = np.array([ZERO_COUNT_Z, 2.0, 3.5, 10.0])
    expected = [0.0, 0.780026302001416526, 2.93059030235000547, 24.8926340873294095]
    np.testing.assert_allclose(inverse_anscombe_unbiased(z), expected, rtol=1e-12, atol=1e-12)
    # below the transform of zero counts the closed form turns back up; those values map to 0
    assert inverse_anscombe_unbiased(np.array([0.5, 1.0, 1.2])).tolist() == [0.0, 0.0, 0.0]
    grid = np.linspace(ZERO_COUNT_Z, 30, 10000)
    assert np.all(np.diff(inverse_anscombe_unbiased(grid)) > 0)
    # large counts: the inverse approaches the algebraic one minus the bias, (z/2)² − 1/8 − 3/8
    assert inverse_anscombe_unbiased(np.array([200.0]))[0] == pytest.approx(100**2 - 1 / 8, rel=1e-6)
    assert math.isclose(inverse_anscombe_unbiased(anscombe(np.array([1e6])))[0], 1e6 + 0.25, rel_tol=1e-9)


def test_anscombe_bm3d_on_poisson30() -> None:
    x = _astronaut_crop()
    g = torch.Generator().manual_seed(3)
    y = torch.poisson(30 * x, generator=g) / 30
    out = AnscombeBM3D().denoise(y, torch.tensor([30.0], dtype=torch.float64))["out"]
    assert out.shape == x.shape
    assert psnr(out, x).item() > psnr(y, x).item() + 6  # measured 17.25 → 28.31 dB
