"""ssdn.eval.metrics: quantisation (round half up, clip), per-image PSNR, mean of PSNRs, SSIM."""

from __future__ import annotations

import math

import pytest
import torch
from skimage.metrics import structural_similarity

from ssdn.eval.metrics import mean_psnr, psnr, quantize, ssim


def test_quantize_rounds_half_up_and_clips() -> None:
    x = torch.tensor([-0.3, 0.0, 0.5, 2.5 / 255, 254.5 / 255, 254.49 / 255, 1.0, 1.7], dtype=torch.float64)
    # 0.5·255 = 127.5 → 128 and 2.5 → 3 (torch.round would give 128 and 2: half to even)
    assert quantize(x).tolist() == [0, 0, 128, 3, 255, 254, 255, 255]
    assert torch.round(torch.tensor(2.5)).item() == 2.0
    halves = torch.tensor([(k + 0.5) / 255 for k in range(255)], dtype=torch.float64)
    assert quantize(halves).tolist() == list(range(1, 256))
    assert quantize(torch.tensor([0.49 / 255, 0.51 / 255])).tolist() == [0, 1]  # float32 input
    u = torch.tensor([0, 7, 255], dtype=torch.uint8)
    assert quantize(u) is u
    with pytest.raises(TypeError):
        quantize(torch.tensor([1, 2]))


def test_psnr_hand_computed() -> None:
    clean = torch.zeros(1, 2, 2, dtype=torch.uint8)
    pred = clean.clone()
    pred[0, 0, 0] = 10  # MSE = 100 / 4 = 25
    assert psnr(pred, clean).item() == pytest.approx(10 * math.log10(255**2 / 25))
    assert psnr(pred, clean).item() == pytest.approx(34.1514035, abs=1e-6)
    # float inputs are quantised first: 0.51/255 → 1 (MSE 1/4), 0.49/255 → 0 (identical → inf)
    c = torch.zeros(1, 2, 2)
    p = c.clone()
    p[0, 1, 1] = 0.51 / 255
    assert psnr(p, c).item() == pytest.approx(10 * math.log10(255**2 / 0.25))
    p[0, 1, 1] = 0.49 / 255
    assert psnr(p, c).item() == math.inf
    # values outside [0, 1] are clipped before scoring, exactly like an 8-bit file
    assert psnr(torch.full((3, 4, 4), 1.3), torch.ones(3, 4, 4)).item() == math.inf


def test_psnr_per_image_and_mean_of_psnrs() -> None:
    clean = torch.zeros(2, 1, 1, 1, dtype=torch.uint8)
    pred = torch.tensor([1, 10], dtype=torch.uint8).view(2, 1, 1, 1)  # MSE 1 and 100
    values = psnr(pred, clean)
    assert values.dtype == torch.float64 and values.shape == (2,)
    assert values.tolist() == pytest.approx([48.1308036, 28.1308036], abs=1e-6)
    assert mean_psnr(values.tolist()) == pytest.approx(38.1308036, abs=1e-6)
    # not the PSNR of the mean MSE (50.5 → 31.0982 dB)
    assert mean_psnr(values.tolist()) != pytest.approx(10 * math.log10(255**2 / 50.5), abs=1)
    assert mean_psnr([30.0, math.inf]) == math.inf
    with pytest.raises(ValueError):
        mean_psnr([])
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(3, 4, 4), torch.zeros(3, 4, 5))


def test_ssim() -> None:
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 40, 50, generator=g, dtype=torch.float64)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    assert ssim(clean, clean).tolist() == pytest.approx([1.0, 1.0])
    values = ssim(noisy, clean)
    assert values.shape == (2,)
    # batching cannot change a value
    assert values[1].item() == ssim(noisy[1], clean[1]).item()
    # agrees with scikit-image's Gaussian SSIM on the same quantised images (border handling differs slightly)
    q = [quantize(t[0]).permute(1, 2, 0).double().numpy() / 255 for t in (noisy, clean)]
    ref = structural_similarity(
        *q, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert values[0].item() == pytest.approx(ref, abs=1e-3)
