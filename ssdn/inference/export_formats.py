"""Writing an ``ExportedDenoiser`` as TorchScript or ONNX (a trace), or the module's weights as safetensors.

The graph holds the network plus the posterior maths in float64, as in training (ONNX supports double for every
op used; onnxruntime runs it on CPU). safetensors holds the weights only (no pickle, safe to load from anyone)
and the run config as metadata, from which ``load_safetensors`` rebuilds the ``DenoiserModule``.

Precision: ``auto`` traces a TorchScript network in bf16 autocast where this machine computes bf16 natively
(``ssdn.inference.denoiser.network_bf16``; the casts are part of the file, so export for the machine that runs
it, or ask for ``fp32``), and exports ONNX in fp32: onnxruntime's CPU provider has no bf16 convolutions.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssdn.errors import UserError
from ssdn.inference.denoiser import PRECISIONS, network_bf16
from ssdn.inference.exported import ExportedDenoiser, fixed_level
from ssdn.nets.unet import SIDE_MULTIPLE, UNet
from ssdn.training.module import DenoiserModule
from ssdn.utils import atomic_path

FORMATS = ("torchscript", "onnx", "safetensors")
CONFIG_KEY = "ssdn_config"
"""safetensors metadata key of the run config (JSON), which rebuilds the module around the weights."""
ONNX_OPSET = 17


def _example(module: DenoiserModule, size: int) -> torch.Tensor:
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


def write_torchscript(model: ExportedDenoiser, example: torch.Tensor, path: Path) -> None:
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


def write_onnx(model: ExportedDenoiser, example: torch.Tensor, path: Path) -> None:
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


def export_bf16(fmt: str, precision: str) -> bool:
    """Whether the network of an export of format ``fmt`` runs in bf16 (see the module docstring)."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if fmt == "onnx":
        if precision == "bf16":
            raise UserError(
                "--precision bf16 does not apply to ONNX (onnxruntime's CPU provider has no bf16 convolutions); "
                "export ONNX with --precision fp32 or auto"
            )
        return False
    return network_bf16(precision, "cpu")


def export(
    module: DenoiserModule,
    fmt: str,
    out: str | Path,
    param: Sequence[float] | None = None,
    size: int = 64,
    *,
    precision: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Write ``module`` to ``out`` (atomically; an existing file only with ``overwrite``) in format ``fmt``;
    ``size`` is the side of the example input that TorchScript and ONNX trace with (the exported graph takes
    any H×W)."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(out)
    if path.is_dir():
        raise UserError(
            f"--out {path} is a folder; give the file to write, e.g. {path / ('denoiser.' + fmt)}"
        )
    if path.exists() and not overwrite:
        raise UserError(
            f"--out {path} exists already; pass --overwrite to replace it, or choose another name"
        )
    if fmt == "safetensors":
        if param is not None:
            raise UserError("--param has no meaning for safetensors (weights and config only)")
        return _write(path, lambda tmp: _safetensors(module, tmp))
    bf16 = export_bf16(fmt, precision)
    model = ExportedDenoiser(module, fixed_level(module, param), bf16=bf16).eval()
    example = _example(module, size)
    trace = write_torchscript if fmt == "torchscript" else write_onnx
    return _write(path, lambda tmp: trace(model, example, tmp))


def _write(path: Path, write: Any) -> Path:
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except OSError as exc:
        raise UserError(
            f"--out {path}: cannot write it ({exc.strerror or exc}); choose another place"
        ) from exc
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
