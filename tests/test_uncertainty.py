"""Posterior std through the API: DenoiserModule.denoise(uncertainty=True), the refusal for point-estimate
methods, and the evaluator, which never scores the std and measures its calibration when asked."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ssdn.data.testsets import TestImage
from ssdn.errors import UserError
from ssdn.eval.evaluator import evaluate
from ssdn.eval.protocol import protocol_configs
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
    plain = evaluate(net, protocols, images=_images(), progress=False)
    assert net.asked == [False] * 4 and plain.sets["kodak"].calibration is None
    cal = evaluate(net, protocols, images=_images(), progress=False, calibrate=True)
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
        evaluate(net, protocols, images=_images(), progress=False, calibrate=True, journal_dir="x")
