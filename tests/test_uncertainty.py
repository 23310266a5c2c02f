"""Posterior std through the API: DenoiserModule.denoise(uncertainty=True), the refusal for point-estimate
methods, and the evaluator, which never scores the std and measures its calibration when asked."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ssdn.data.testsets import TestImage
from ssdn.errors import UserError
from ssdn.eval.evaluator import evaluate
from ssdn.eval.protocol import NoiseSpec, ProtocolConfig, generate, prepare_set, protocol_configs
from ssdn.eval.settings import EvalSettings
from ssdn.evaluate import _parse_value
from ssdn.evaluate import main as evaluate_main
from ssdn.training.module import DenoiserModule
from tests.conftest import compose_config


def build(*overrides: str) -> DenoiserModule:
    cfg = compose_config(*overrides, output_dir="unused")  # never written: no training here
    torch.manual_seed(0)
    return DenoiserModule(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)).eval()


def noisy_batch(n: int = 2, c: int = 3, s: int = 32) -> torch.Tensor:
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("noise", ["gaussian", "poisson", "impulse", "poisson_gaussian"])
def test_module_denoise_adds_the_posterior_std_of_the_noise_model(noise: str) -> None:
    module = build(f"noise={noise}", "method=ssdn")
    noisy = noisy_batch()
    params = module.noise.sample_params(2)
    plain = module.denoise(noisy, params, bf16=False)
    outs = module.denoise(noisy, params, bf16=False, uncertainty=True)
    assert list(plain) == ["pme", "mu"] and list(outs) == ["pme", "mu", "posterior_std"]
    std = outs["posterior_std"]
    assert std.shape == noisy.shape and std.dtype == torch.float32 and (std >= 0).all()
    torch.testing.assert_close(outs["pme"], plain["pme"], rtol=0, atol=0)
    # The same numbers as the noise model's own maths on the network's prior.
    from ssdn.methods.prior import split_prior

    with torch.no_grad():
        mu, cov = split_prior(module(noisy), "full", 3)
    level = module.noise.pixel_level(module.method.level(noisy, params, module.noise))
    y = noisy.permute(0, 2, 3, 1).double()
    expected = module.noise.posterior_std(y, mu, cov, level).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(std, expected, rtol=0, atol=0)


def test_point_estimate_method_refuses_uncertainty_naming_it() -> None:
    module = build("noise=gaussian", "method=n2c")
    with pytest.raises(UserError, match="method 'n2c' predicts a point estimate"):
        module.denoise(noisy_batch(), module.noise.sample_params(2), uncertainty=True)
    assert list(module.denoise(noisy_batch(), module.noise.sample_params(2))) == ["out"]
    with pytest.raises(UserError, match="no posterior"):  # the objective itself, for direct callers
        module.method.objective.outputs(noisy_batch(), noisy_batch(), module.noise, None, uncertainty=True)


def _images(n: int = 2, size: int = 40) -> dict[str, list[TestImage]]:
    g = torch.Generator().manual_seed(3)
    imgs = [(torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy() for _ in range(n)]
    return {"kodak": [TestImage(name=f"t{i}.png", pixels=p) for i, p in enumerate(imgs)]}


class StdNet:
    """A network stand-in that returns its input and a constant posterior std when asked for one."""

    name = "std-net"
    requires_square_multiple = 32

    def __init__(self) -> None:
        self.asked: list[bool] = []

    def denoise(self, noisy: torch.Tensor, params: torch.Tensor, uncertainty: bool = False) -> dict:
        self.asked.append(uncertainty)
        out = {"pme": noisy.clone()}
        if uncertainty:
            out["posterior_std"] = torch.full_like(noisy, 25 / 255)
        return out


def test_evaluator_never_scores_the_std_and_calibrates_on_request() -> None:
    protocols = protocol_configs({"sets": "kodak", "repeats": 2}, ("gaussian", 25), channels=3)
    net = StdNet()
    plain = evaluate(net, protocols, EvalSettings(progress=False), _images())
    assert net.asked == [False] * 4 and plain.sets["kodak"].calibration is None
    cal = evaluate(net, protocols, EvalSettings(progress=False, calibrate=True), _images())
    assert net.asked[4:] == [True] * 4
    s = cal.sets["kodak"]
    assert set(s.psnr) == {"noisy", "pme"} and s.psnr == plain.sets["kodak"].psnr
    assert s.calibration is not None and s.calibration["pixels"] == 4 * 40 * 40 * 3  # cropped to the image
    # The identity's error is the noise itself (σ = 25), so the std is exactly the noise's: about 68 % / 95 %
    # (the noisy pixels are not clipped; the clean ones are 8-bit).
    cover = s.calibration["coverage"]
    assert cover["1sigma"]["observed"] == pytest.approx(0.6827, abs=0.01)
    assert cover["2sigma"]["observed"] == pytest.approx(0.9545, abs=0.006)
    with pytest.raises(ValueError, match="calibrate needs every image"):
        EvalSettings(calibrate=True, journal_dir="x")


def test_a_poisson_gaussian_checkpoint_is_evaluated_with_calibration(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m ssdn.evaluate --checkpoint [--calibration]`` on a Poisson–Gaussian model (2 parameters, drawn
    per image from their ranges): each image reaches the network with its own (a, b), the results record both,
    and the posterior std is calibrated. Before, the protocol called float() on (a, b) and failed."""
    module = build("noise=poisson_gaussian_range", "method=ssdn")
    ckpt = tmp_path / "pg.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    args = ["--checkpoint", str(ckpt), "--sets", "kodak", "--repeats", "2", "--limit", "1", "--crop", "64"]
    args += ["--root", str(data_root), "--device", "cpu", "--no-progress"]
    plain = evaluate_main([*args, "--out", str(tmp_path / "plain")])  # journalled, as after training
    results = evaluate_main([*args, "--out", str(tmp_path / "cal"), "--calibration"])
    s = results.sets["kodak"]
    assert s.count == 2 and s.calibration is not None and s.calibration["pixels"] == 2 * 64 * 64 * 3
    assert results.noise["label"] == "poisson_gaussian_a0.001_0.02_b0_0.0016"
    assert s.psnr == plain.sets["kodak"].psnr
    # the rows hold the (a, b) the protocol drew for each image, in its documented order
    spec = NoiseSpec("poisson_gaussian", {"a": (0.001, 0.02), "b": (0.0, 0.0016)})
    config = ProtocolConfig("kodak", spec, repeats=2, limit=1, crop=64)
    drawn = [it.param for it in generate(prepare_set(config, root=data_root))]
    assert [r.param for r in s.rows] == drawn and drawn[0] != drawn[1]
    with open(tmp_path / "cal" / "per_image.csv", newline="") as f:
        cells = [row["param"] for row in csv.DictReader(f)]
    assert cells == [f"a={p['a']!r} b={p['b']!r}" for p in drawn if isinstance(p, dict)] and len(cells) == 2
    calibration = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert set(calibration["sets"]["kodak"]["coverage"]) == {"1sigma", "2sigma"}
    assert "calibration ±1" in capsys.readouterr().out
    # another (a, b) on the command line, one name=value per parameter; a single number is refused in one line
    fixed = evaluate_main([*args, "--out", str(tmp_path / "fixed"), "--value", "a=0.01", "b=0.0001,0.0004"])
    assert fixed.noise["label"] == "poisson_gaussian_a0.01_b0.0001_0.0004"
    with pytest.raises(SystemExit) as info:
        evaluate_main([*args, "--out", str(tmp_path / "bad"), "--value", "25"])
    assert info.value.code == 2
    assert "error: --noise poisson_gaussian --value: poisson_gaussian noise: the value must be a mapping" in (
        capsys.readouterr().err
    )
    assert _parse_value(["5,50"]) == [5.0, 50.0] and _parse_value(["a=1", "b=2,3"]) == {
        "a": 1.0,
        "b": [2.0, 3.0],
    }
    with pytest.raises(ValueError, match="one, or a range"):
        _parse_value(["1,2,3"])
