"""The camera-noise remedies wired into training and denoising: the blind square (``method.blind_hole``, at
inference ``method.blind_hole_infer``), pixel
shuffle (``method.pd_stride``, ``method.pd_stride_infer``), R³ (``--r3-passes``), and the check that warns when a
run's blind region does not cover the noise's correlation."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from ssdn.denoise import main as denoise_main
from ssdn.errors import UserError
from ssdn.inference.denoiser import Refinement, denoise_pixels
from ssdn.inference.exported import ExportedDenoiser, fixed_level
from ssdn.nets.pixel_shuffle import PixelShuffleNet
from ssdn.nets.unet import UNet
from ssdn.train import run
from ssdn.training.checkpoints import read_checkpoint
from ssdn.training.module import DenoiserModule
from ssdn.training.noise_check import NoiseCheck, blind_spot_check, covered_extent, posterior_note
from tests.conftest import compose_config
from tests.test_noisy_only import noisy_overrides


def _module(*overrides: str) -> DenoiserModule:
    cfg = compose_config("data=folder", "data.train_dir=unused", *overrides, output_dir="unused")
    return DenoiserModule(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def _correlated(rng: np.random.Generator, n: int = 4, size: int = 192) -> list[torch.Tensor]:
    """Shaded images plus white noise blurred by [1,2,1]⊗[1,2,1]: correlated over 2 px."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([0.3 + 0.3 * xx * yy, 0.5 + 0.1 * np.sin(3 * xx), 0.4 + 0.2 * yy])
    out = []
    for _ in range(n):
        noise = rng.normal(size=(3, size, size))
        for axis in (1, 2):
            noise = np.roll(noise, -1, axis) + 2 * noise + np.roll(noise, 1, axis)
        out.append(torch.from_numpy(base + noise * (15 / 255) / 6.0).float())
    return out


def test_covered_extent_of_hole_and_stride() -> None:
    assert covered_extent(1, 1) == 0
    assert covered_extent(3, 1) == 1 and covered_extent(5, 1) == 2
    assert covered_extent(1, 3) == 2 and covered_extent(3, 5) == 4


def test_blind_spot_check_warns_for_correlated_noise_unless_the_region_covers_it() -> None:
    rng = np.random.default_rng(0)
    correlated = _correlated(rng)
    check = blind_spot_check(correlated, blind_hole=1, pd_stride=1)
    warning = check.warning
    assert warning is not None and "over 2 px" in warning and "\n" not in warning
    assert "method.blind_hole=5" in warning and "method.pd_stride=3" in warning
    assert check.correlated_sigma == pytest.approx(15.0, rel=0.15)  # the noise's per-pixel std, 15/255
    covered = blind_spot_check(correlated, blind_hole=5, pd_stride=1)
    assert covered.warning is None and covered.correlated_sigma == check.correlated_sigma
    assert blind_spot_check(correlated, blind_hole=1, pd_stride=3).warning is None
    white = [
        img[:, :, :] * 0 + 0.5 + torch.from_numpy(rng.normal(0, 0.05, img.shape)).float()
        for img in correlated
    ]
    independent = blind_spot_check(
        white, blind_hole=1, pd_stride=1
    )  # nothing to change, the measurement kept
    assert (independent.warning, independent.correlated_sigma) == (None, None)
    assert independent.measured is not None and independent.measured["extent"] == 0.0
    assert (
        check.measured is not None and check.measured["extent"] == 2.0 and covered.measured == check.measured
    )
    assert blind_spot_check([torch.rand(3, 16, 16)], 1, 1) == NoiseCheck()  # too small to measure: no claim


def test_the_paper_net_is_not_wrapped_and_remedies_build_what_they_say() -> None:
    plain = _module()
    assert isinstance(plain.net, UNet) and plain.net.blind_hole == 1
    holed = _module("method.blind_hole=3")
    assert isinstance(holed.net, UNet) and holed.net.blind_hole == 3
    assert holed.net.state_dict().keys() == plain.net.state_dict().keys()  # the hole has no weights
    shuffled = _module("method.pd_stride=5", "method.pd_stride_infer=2")
    assert isinstance(shuffled.net, PixelShuffleNet) and shuffled.net.stride == 5
    assert (shuffled.train_stride, shuffled.infer_stride) == (5, 2)
    assert _module("method.pd_stride=3").infer_stride == 3  # pd_stride_infer: null means the training stride


def test_denoise_runs_at_the_inference_stride_and_restores_the_training_one() -> None:
    torch.manual_seed(0)
    module = _module(
        "method.pd_stride=4", "method.pd_stride_infer=2", "channels=1", "noise_params=sigma_known"
    )
    seen: list[int] = []
    net = module.net
    assert isinstance(net, PixelShuffleNet)
    net.register_forward_pre_hook(lambda m, _: seen.append(m.stride))
    noisy = torch.rand(1, 1, 64, 64)
    params = torch.full((1,), 25.0, dtype=torch.float64)
    module.denoise(noisy, params)
    module.denoise(noisy, params, stride=1)
    assert seen == [2, 1] and net.stride == 4
    with pytest.raises(ValueError, match="no pixel-shuffle"), _module().pd_stride(2):
        pass


def test_denoise_and_export_use_the_inference_hole_and_training_keeps_its_own() -> None:
    """method.blind_hole_infer: denoising equals a net built with that hole on the same weights; the training
    net keeps the training hole, before and after; the exported graph denoises with the inference hole."""
    torch.manual_seed(0)
    trained = _module(
        "method.blind_hole=3", "method.blind_hole_infer=1", "channels=1", "noise_params=sigma_known"
    )
    assert trained.infer_hole == 1 and trained.unet is not None and trained.unet.blind_hole == 3
    plain = _module("channels=1", "noise_params=sigma_known")
    plain.load_state_dict(trained.state_dict())
    noisy = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    params = torch.full((1,), 25.0, dtype=torch.float64)
    out = trained.denoise(noisy, params)["pme"]
    assert torch.equal(out, plain.denoise(noisy, params)["pme"])
    assert trained.unet.blind_hole == 3
    with trained.blind_hole(3):
        assert not torch.equal(trained.method.denoise(trained, trained.noise, noisy, params)["pme"], out)
    exported = ExportedDenoiser(trained, fixed_level(trained, [25.0])).eval()
    with torch.no_grad():
        assert torch.allclose(exported(noisy), out.float(), atol=1e-6)
    assert trained.unet.blind_hole == 3
    assert _module("method.blind_hole=5").infer_hole == 5  # null: the training hole
    with pytest.raises(ValueError, match="no blind-spot net"), _module("method=n2c").blind_hole(3):
        pass


def test_r3_is_reproducible_changes_the_output_and_refuses_uncertainty() -> None:
    torch.manual_seed(0)
    module = _module("method.pd_stride=2", "channels=1", "noise_params=sigma_known")
    pixels = torch.rand(1, 64, 64)
    params = torch.full((1,), 25.0, dtype=torch.float64)
    first, _, _ = denoise_pixels(module, pixels, params)
    r3 = Refinement(passes=2, replace_prob=0.3, seed=7)
    once, _, _ = denoise_pixels(module, pixels, params, r3=r3)
    again, _, _ = denoise_pixels(module, pixels, params, r3=r3)
    assert torch.equal(once, again) and not torch.equal(once, first)
    with pytest.raises(UserError, match="--uncertainty with --r3-passes"):
        denoise_pixels(module, pixels, params, uncertainty=True, r3=r3)
    with pytest.raises(UserError, match="--r3-passes=0"):
        Refinement(passes=0)
    with pytest.raises(UserError, match=r"--r3-prob=1\.5"):
        Refinement(passes=1, replace_prob=1.5)


def test_the_posterior_note_is_for_correlated_noise_only() -> None:
    assert posterior_note(None) is None
    independent = {"sigma": 25.0, "rho_01": 0.03, "rho_10": 0.02, "extent": 0.0, "channel_correlation": 0.1}
    assert posterior_note(independent) is None
    note = posterior_note(independent | {"rho_01": 0.214, "rho_10": 0.2, "extent": 1.0})
    assert note is not None and note.startswith("note: this model learnt from noise correlated")
    assert "rho(0,1) = 0.21, rho(1,0) = 0.20, over 1 px" in note and "lower bound" in note
    correlated = independent | {"extent": 1.0}
    assert posterior_note(correlated, infer_stride=2) is None  # sub-images 2 px apart: beyond the correlation
    assert posterior_note(correlated | {"extent": 2.0}, infer_stride=2) is not None


def test_export_refuses_a_pixel_shuffle_model_in_one_line() -> None:
    with pytest.raises(UserError, match="pixel-shuffle stride 2"):
        ExportedDenoiser(_module("method.pd_stride=2"), None)


@pytest.mark.slow
def test_a_camera_remedy_trains_on_noisy_files_warns_and_denoises_with_r3(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the real entry points: correlated noisy PNGs, a plain run warns, a pixel-shuffle run does not,
    its checkpoint denoises with R³, and with --uncertainty it notes that the std assumed independent noise."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, img in enumerate(_correlated(rng, n=3, size=128)):
        pixels = (img.permute(1, 2, 0).numpy().clip(0, 1) * 255 + 0.5).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"p{i}.png")
    with caplog.at_level(logging.WARNING):
        run(compose_config(*noisy_overrides(folder), output_dir=tmp_path / "plain"))
    assert any("spatially correlated" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run(compose_config(*noisy_overrides(folder, "method.pd_stride=3"), output_dir=tmp_path / "pd"))
    assert not any("spatially correlated" in r.getMessage() for r in caplog.records)
    ckpt = tmp_path / "pd" / "checkpoints" / "last.ckpt"
    # the learned level started at the correlated noise's measured σ (15), not Chen's far lower estimate
    assert read_checkpoint(ckpt)["ssdn_level"]["sigma"] == pytest.approx(15.0, rel=0.2)
    out = tmp_path / "out"
    denoise_main(
        [str(ckpt), str(folder / "p0.png"), "--out", str(out), "--r3-passes", "2", "--device", "cpu"]
    )
    assert Image.open(out / "p0.png").size == (128, 128)
    # the measurement travels with the model, and --uncertainty says what it means for the std
    plain = tmp_path / "plain" / "checkpoints" / "last.ckpt"
    measured = read_checkpoint(plain)["ssdn_training_noise"]
    assert measured["extent"] >= 1 and measured["rho_01"] > 0.1
    assert read_checkpoint(ckpt)["ssdn_training_noise"] == measured
    capsys.readouterr()
    denoise_main([str(plain), str(folder / "p1.png"), "--out", str(out), "--uncertainty", "--device", "cpu"])
    assert posterior_note(measured) in capsys.readouterr().err
