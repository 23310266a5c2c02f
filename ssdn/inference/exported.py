"""What an exported model computes: noisy image in, the module's reported output out, at one noise level.

The graph pads each input itself, mirrored at the bottom/right to the next multiple of 32 on each side (the
rule of ``ssdn.nets.padding.mirror_pad``, the one ``python -m ssdn.denoise`` uses), and crops the output back,
so it takes any H×W, 33×33 included. The padding is computed from the input's traced shape with tensor ops, so
TorchScript and ONNX keep H and W dynamic rather than freezing the example's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ssdn.errors import UserError
from ssdn.methods import Method
from ssdn.nets.pixel_shuffle import PixelShuffleNet
from ssdn.nets.unet import SIDE_MULTIPLE
from ssdn.noise import NoiseModel
from ssdn.noise.base import ParamValue
from ssdn.training.module import DenoiserModule


def padded_index(n: int, device: torch.device) -> Tensor:
    """Source row of each of the ``ceil(n / 32) · 32`` rows of an axis of length ``n`` mirrored past its end
    (a triangle wave of period 2(n − 1); a length-1 axis repeats). While tracing, ``n`` (an input's size) is a
    tensor, so this arithmetic is recorded in the graph rather than frozen to the example's size."""
    target = (n + SIDE_MULTIPLE - 1) // SIDE_MULTIPLE * SIDE_MULTIPLE
    i = torch.arange(target, device=device)
    period = torch.clamp(torch.as_tensor(2 * (n - 1), device=device), min=1)
    i = i % period
    return torch.where(i < n, i, period - i)


class ExportedDenoiser(nn.Module):
    """Noisy (N, C, H, W) float32, any H and W -> the module's reported output (N, C, H, W) float32 at one level.

    ``level``: a fixed level in the noise model's internal units (() or (P,)), or None for the method's own
    level source (a learned one, which then runs in the graph). Methods without a level ignore it. ``bf16``:
    the network in bf16 autocast (the posterior stays float64), as ``DenoiserModule.denoise(bf16=True)``.
    """

    net: nn.Module
    noise: NoiseModel
    method: Method
    level: Tensor

    def __init__(self, module: DenoiserModule, level: Tensor | None, bf16: bool = False) -> None:
        super().__init__()
        if isinstance(module.net, PixelShuffleNet):
            # Tracing records pd_down's reshapes with the example's sizes: the graph would take no other H×W.
            raise UserError(
                f"this model denoises with pixel-shuffle stride {module.infer_stride} (method.pd_stride): "
                "TorchScript/ONNX export of pixel-shuffle models is not supported yet; use python -m ssdn.denoise"
            )
        self.net, self.noise, self.method = module.net, module.noise, module.method
        unet = module.unet
        if unet is not None and unet.blindspot and unet.blind_hole != module.infer_hole:
            # a copy at method.blind_hole_infer: the trace records the net's shift as it stands
            self.net = copy.deepcopy(unet)
            self.net.blind_hole = module.infer_hole
        self.fixed = level is not None
        self.bf16 = bf16
        self.register_buffer("level", level.to(torch.float64) if level is not None else torch.zeros(0))

    def forward(self, noisy: Tensor) -> Tensor:
        h, w = noisy.shape[-2], noisy.shape[-1]
        padded = noisy.index_select(-2, padded_index(h, noisy.device))
        padded = padded.index_select(-1, padded_index(w, noisy.device))
        with torch.autocast(noisy.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            out = self._denoise(padded)
        return out[..., :h, :w]

    def _denoise(self, noisy: Tensor) -> Tensor:
        objective = self.method.objective
        level: Tensor | None = None
        if objective.uses_level:
            n = noisy.shape[0]
            if self.fixed:
                level = self.level.expand(n, *self.level.shape)
            else:
                level = self.method.level(noisy, noisy.new_zeros(0, dtype=torch.float64), self.noise)
        outputs = objective.outputs(self.net(noisy), noisy, self.noise, level)
        return next(iter(outputs.values()))


def fixed_level(module: DenoiserModule, param: Sequence[float] | None) -> Tensor | None:
    """The level to export (internal units), or None for the method's learned level source.

    ``param`` (paper units, one value per noise parameter) is validated by the noise model's own rules; without
    it a learned level is used, or else the configured value when it is fixed (a range needs ``--param``)."""
    noise = module.noise
    if param is not None:
        names = noise.param_names
        if len(param) != len(names):
            raise UserError(f"--param needs {len(names)} value(s) ({', '.join(names)}), got {len(param)}")
        value: ParamValue = param[0] if len(names) == 1 else dict(zip(names, param, strict=True))
        try:
            type(noise)(value)  # the noise model's domain check
        except ValueError as exc:
            raise UserError(f"--param: {exc}") from exc
        params = torch.tensor(list(param) if len(names) > 1 else param[0], dtype=torch.float64)
        return noise.to_level(params)
    if not module.method.objective.uses_level or module.method.learned_level:
        return None
    if noise.variable:
        raise UserError(
            f"this model was trained on a range of noise ({noise.extra_repr()}) with the level known: "
            f"pass the level to export with --param ({', '.join(noise.param_names)})"
        )
    return noise.to_level(noise.low)
