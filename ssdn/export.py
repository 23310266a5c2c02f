"""Export a trained denoiser: a self-contained TorchScript or ONNX model, or the weights alone as safetensors.

    python -m ssdn.export CKPT --format torchscript --out denoiser.pt [--param 25]
    python -m ssdn.export CKPT --format onnx --out denoiser.onnx [--param 25]
    python -m ssdn.export CKPT --format safetensors --out denoiser.safetensors

TorchScript and ONNX hold the network plus the reported output (the posterior mean for the paper's method) at
one noise level: ``--param`` (paper units), else the learned level (global value or per-image estimator, which
is then part of the graph), else the checkpoint's fixed value. Input: a noisy float32 (N, C, H, W) batch in
[0, 1] units, H and W multiples of 32 (square or not: the graph is the blind-spot net's two-pass path, which
takes both); output: the denoised (N, C, H, W) float32. The posterior maths stays float64
inside the graph, as in training (ONNX supports double for every op used; onnxruntime runs it on CPU).
safetensors holds the weights only (no pickle, safe to load from anyone) and the run config as metadata, from
which ``load_safetensors`` rebuilds the ``DenoiserModule``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssdn.errors import UserError, exit_on_user_error
from ssdn.methods import Method
from ssdn.nets.unet import SIDE_MULTIPLE, UNet
from ssdn.noise import NoiseModel
from ssdn.noise.base import ParamValue
from ssdn.training.module import DenoiserModule
from ssdn.utils import atomic_path

__all__ = ["FORMATS", "ExportedDenoiser", "export", "load_checkpoint", "load_safetensors"]

FORMATS = ("torchscript", "onnx", "safetensors")
CONFIG_KEY = "ssdn_config"
"""safetensors metadata key of the run config (JSON), which rebuilds the module around the weights."""
ONNX_OPSET = 17


class ExportedDenoiser(nn.Module):
    """Noisy (N, C, H, W) float32 -> the module's reported output (N, C, H, W) float32 at one level.

    ``level``: a fixed level in the noise model's internal units (() or (P,)), or None for the method's own
    level source (a learned one, which then runs in the graph). Methods without a level ignore it.
    """

    net: nn.Module
    noise: NoiseModel
    method: Method
    level: Tensor

    def __init__(self, module: DenoiserModule, level: Tensor | None) -> None:
        super().__init__()
        self.net, self.noise, self.method = module.net, module.noise, module.method
        self.fixed = level is not None
        self.register_buffer("level", level.to(torch.float64) if level is not None else torch.zeros(0))

    def forward(self, noisy: Tensor) -> Tensor:
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


def load_checkpoint(path: str | Path) -> DenoiserModule:
    """The module of a training checkpoint, on the CPU in eval mode; a missing or foreign file is a UserError."""
    ckpt = Path(path)
    if not ckpt.is_file():
        raise UserError(f"checkpoint not found: {ckpt}; pass the .ckpt a training run wrote")
    try:
        module = DenoiserModule.load_from_checkpoint(ckpt, map_location=torch.device("cpu"))
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(f"{ckpt} is not an ssdn training checkpoint ({type(exc).__name__}: {exc})") from exc
    return module.eval()


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


def _example(module: DenoiserModule, size: int) -> Tensor:
    if size <= 0 or size % SIDE_MULTIPLE:
        raise UserError(f"--size must be a positive multiple of {SIDE_MULTIPLE}, got {size}")
    return torch.rand(1, module.channels, size, size, generator=torch.Generator().manual_seed(0))


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    """The trace warns at every shape check of the maths (constant for one model, as intended) and ONNX at
    every flip it cannot fold; the equality tests (tests/test_export.py) are what guards the graph."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        yield


@contextmanager
def _any_shape(model: nn.Module) -> Iterator[None]:
    """Trace the blind-spot nets' two-pass path, which takes square and non-square inputs alike: the one-pass
    path for squares is chosen by a Python test of the shape, which a trace would freeze to the example's."""
    nets = [m for m in model.modules() if isinstance(m, UNet)]
    before = [net.two_pass for net in nets]
    for net in nets:
        net.two_pass = True
    try:
        yield
    finally:
        for net, flag in zip(nets, before, strict=True):
            net.two_pass = flag


def _torchscript(model: ExportedDenoiser, example: Tensor, path: Path) -> None:
    with torch.no_grad(), _quiet_tracing(), _any_shape(model):
        traced = torch.jit.trace(model, example, check_trace=False)
    torch.jit.save(traced, str(path))


def _rot90_symbolic(g: Any, x: Any, k: Any, dims: Any) -> Any:
    """ONNX has no rot90 (the blind-spot net's rotations): torch's own decomposition into flips (a Slice with
    step −1) and a Transpose; k = 1: flip(dims[1]) then swap, 2: flip both, 3: flip(dims[0]) then swap."""
    from torch.onnx import symbolic_helper as sh

    turns = sh._get_const(k, "i", "k") % 4
    a, b = sh._get_const(dims, "is", "dims")
    rank = sh._get_tensor_rank(x)
    if rank is None:
        raise NotImplementedError("rot90 of a tensor of unknown rank does not export to ONNX here")

    def flip(t: Any, axis: int) -> Any:
        const = lambda v: g.op("Constant", value_t=torch.tensor([v], dtype=torch.int64))  # noqa: E731
        return g.op("Slice", t, const(-1), const(-(2**63) + 1), const(axis), const(-1))

    def swap(t: Any) -> Any:
        perm = list(range(rank))
        perm[a], perm[b] = perm[b], perm[a]
        return g.op("Transpose", t, perm_i=perm)

    if turns == 0:
        return x
    if turns == 2:
        return flip(flip(x, a), b)
    return swap(flip(x, b if turns == 1 else a))


def _diag_embed_symbolic(channels: int) -> Any:
    """ONNX has no diag_embed (Poisson Σ_n, diagonal prior): x[..., None] · I, the identity of the model's channel
    count, which is static, while the trace sees it as a size of the input."""

    def symbolic(g: Any, x: Any, offset: Any, dim1: Any, dim2: Any) -> Any:
        from torch.onnx import symbolic_helper as sh

        if [sh._get_const(v, "i", "") for v in (offset, dim1, dim2)] != [0, -2, -1]:
            raise NotImplementedError("only diag_embed(x) of the last dim exports to ONNX here")
        eye = g.op("Constant", value_t=torch.eye(channels, dtype=torch.float64))
        axes = g.op("Constant", value_t=torch.tensor([-1], dtype=torch.int64))
        return g.op("Mul", g.op("Unsqueeze", x, axes), eye)

    return symbolic


def _onnx(model: ExportedDenoiser, example: Tensor, path: Path) -> None:
    torch.onnx.register_custom_op_symbolic("aten::rot90", _rot90_symbolic, ONNX_OPSET)
    torch.onnx.register_custom_op_symbolic(
        "aten::diag_embed", _diag_embed_symbolic(example.shape[1]), ONNX_OPSET
    )
    dims = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), _quiet_tracing(), _any_shape(model):
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["noisy"],
            output_names=["denoised"],
            dynamic_axes={"noisy": dims, "denoised": dims},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def _safetensors(module: DenoiserModule, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, str(path), metadata={CONFIG_KEY: json.dumps(module.hparams["config"])})


def export(
    module: DenoiserModule, fmt: str, out: str | Path, param: Sequence[float] | None = None, size: int = 64
) -> Path:
    """Write ``module`` to ``out`` (atomically) in format ``fmt``; ``size`` is the side of the example input
    that TorchScript and ONNX trace with (the exported graph takes any H×W, both multiples of 32)."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(out)
    if fmt == "safetensors":
        if param is not None:
            raise UserError("--param has no meaning for safetensors (weights and config only)")
        with atomic_path(path) as tmp:
            _safetensors(module, tmp)
        return path
    model = ExportedDenoiser(module, fixed_level(module, param)).eval()
    example = _example(module, size)
    write = _torchscript if fmt == "torchscript" else _onnx
    with atomic_path(path) as tmp:
        write(model, example, tmp)
    return path


def load_safetensors(path: str | Path) -> DenoiserModule:
    """Rebuild the ``DenoiserModule`` from a safetensors export (weights + config metadata), in eval mode."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    file = Path(path)
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(file))
    except (OSError, SafetensorError) as exc:
        raise UserError(f"{file} is not a readable safetensors file ({exc})") from exc
    if CONFIG_KEY not in meta:
        raise UserError(f"{file} has no {CONFIG_KEY!r} metadata: it was not written by python -m ssdn.export")
    module = DenoiserModule(json.loads(meta[CONFIG_KEY]))
    module.load_state_dict(state)
    return module.eval()


def _parse_param(text: str) -> list[float]:
    """``25`` or ``0.01,0.000384`` (one value per noise parameter)."""
    try:
        return [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m ssdn.export", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a .ckpt written by train.py")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="the file to write (replaced atomically)")
    p.add_argument("--param", type=_parse_param, help="noise level in paper units, e.g. 25 or 0.01,0.000384")
    p.add_argument("--size", type=int, default=64, help="side of the example input traced (multiple of 32)")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    args = p.parse_args(argv)
    with exit_on_user_error(p.prog, args.debug):
        path = export(load_checkpoint(args.checkpoint), args.format, args.out, args.param, args.size)
    print(json.dumps({"export": str(path), "format": args.format}))
    return path


if __name__ == "__main__":
    main()
