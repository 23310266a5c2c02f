"""Short real-photo training runs (slow; CI runs them): the paper's method clearly denoises, and the per-image
noise estimator moves from the authors' initial ~4.9 toward the true σ = 25. Its margin over the μ-only ablation
is a figure, recorded by bench/quality.py."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from ssdn.data.io import list_images, load_image
from ssdn.eval.metrics import psnr
from ssdn.train import run
from ssdn.training.module import DenoiserModule
from tests.conftest import compose_config

STEPS = 400
SIGMA_STEPS = 200  # the level's rise shows early (it swings above 25 within 150 steps); CI time is precious


def _held_out(data_root: Path, n: int = 20, size: int = 64) -> torch.Tensor:
    """Centre 64² crops of the first 20 BSD300 test images (disjoint from the BSDS500 training folder)."""
    crops = []
    for path in list_images(data_root / "bsd300")[:n]:
        img = load_image(path)
        top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
        crops.append(torch.from_numpy(img[top : top + size, left : left + size].copy()).permute(2, 0, 1))
    return torch.stack(crops).float() / 255


class _Keep(L.Callback):
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.module = pl_module


def _train(
    data_root: Path, out: Path, *overrides: str, steps: int = STEPS
) -> tuple[DenoiserModule, dict[str, float]]:
    cfg = compose_config(
        "logger=csv",
        "data=folder",
        f"data.train_dir={data_root / 'train-bsds500-400'}",
        "data.recursive=false",
        "data.crop_size=64",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.in_memory=true",
        "data.val_dir=skimage:val",
        "data.val_count=1",
        "data.val_size=64",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"trainer.checkpoint_every_n_steps={steps}",
        "trainer.enable_progress_bar=false",
        "example.enabled=false",
        *overrides,
        output_dir=out,
    )
    keep = _Keep()
    metrics = run(cfg, extra_callbacks=[keep])
    return keep.module, metrics


def _score(module: DenoiserModule, clean: torch.Tensor) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(2019)
    params = module.noise.sample_params(clean.shape[0], gen)
    noisy = module.noise.corrupt(clean, params, gen)
    out = next(iter(module.denoise(noisy, params, bf16=False).values()))
    return float(psnr(noisy, clean).mean()), float(psnr(out, clean).mean())


@pytest.mark.slow
def test_ssdn_beats_noisy_by_6db(data_root: Path, tmp_path: Path) -> None:
    clean = _held_out(data_root)
    ssdn, _ = _train(data_root, tmp_path / "ssdn", "method=ssdn")
    noisy_psnr, ssdn_psnr = _score(ssdn, clean)
    print(f"\n{STEPS} steps, 64² crops: noisy {noisy_psnr:.2f} dB, ssdn {ssdn_psnr:.2f} dB")
    assert ssdn_psnr >= noisy_psnr + 6.0


@pytest.mark.slow
def test_per_image_sigma_moves_toward_truth(data_root: Path, tmp_path: Path) -> None:
    """The estimator starts every image at the authors' level softplus(0 − 4) + 1e-3 = 4.88 (8-bit σ; its last
    layer starts at zero) and must rise well toward the true 25 within 200 steps.

    sigma_global is not tested here: Adam moves its raw scalar by at most ~lr per step, and the paper's
    schedule sums to ≈ 0.09 over 400 steps, so the level cannot pass ≈ 5.3 however right its gradient is
    (measured at 300 steps: 4.88 → 4.89). Its wiring is covered elsewhere: the gradient of likelihood +
    regulariser with respect to the level (tests/test_posterior.py::test_gradcheck_loss_wrt_raw_output_and_level),
    the raw scalar training to 25/255 from the paper's start (tests/test_nets.py::test_global_noise_level_trains)
    and the level changing in a real training step (tests/test_training.py::test_every_row_trains_and_checkpoints).
    """
    params = "sigma_per_image"
    # the authors' start, explicitly: new runs default to noise_params.init=data, which starts near 25 already
    module, metrics = _train(
        data_root, tmp_path, f"noise_params={params}", "noise_params.init=paper", steps=SIGMA_STEPS
    )
    initial = float(torch.nn.functional.softplus(torch.tensor(-4.0, dtype=torch.float64)) + 1e-3) * 255
    clean = _held_out(data_root, n=8)
    gen = torch.Generator().manual_seed(7)
    params_t = module.noise.sample_params(clean.shape[0], gen)
    noisy = module.noise.corrupt(clean, params_t, gen)
    with torch.no_grad():
        level = module.method.level(noisy, params_t, module.noise)
    estimate = float(module.noise.to_params(level).mean())
    print(
        f"\n{params}: initial {initial:.2f}, after {SIGMA_STEPS} steps {estimate:.2f} (train log "
        f"{metrics['train/noise_level']:.2f}), true 25"
    )
    # Measured at 300 steps: 4.88 → 32.6, an early overshoot that the paper's long runs settle (the bench saw it
    # swing between 22 and 51 in the first 150 steps). It must rise by more than 5 (a quarter of the way to 25 at
    # least) and must not diverge.
    assert initial + 5.0 < estimate < 4 * 25.0
