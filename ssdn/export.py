"""Export a trained denoiser: a self-contained TorchScript or ONNX model, or the weights alone as safetensors.

    python -m ssdn.export CKPT --format torchscript --out denoiser.pt [--param 25] [--precision auto]
    python -m ssdn.export CKPT --format onnx --out denoiser.onnx [--param 25]
    python -m ssdn.export CKPT --format safetensors --out denoiser.safetensors

TorchScript and ONNX hold the network plus the reported output (the posterior mean for the paper's method) at
one noise level: ``--param`` (paper units), else the learned level (global value or per-image estimator, which
is then part of the graph), else the checkpoint's fixed value. Input: a noisy float32 (N, C, H, W) batch in
[0, 1] units, any H and W (the graph mirror-pads to multiples of 32 and crops back,
``ssdn.inference.exported``); output: the denoised (N, C, H, W) float32. ``--precision auto`` runs a TorchScript
network in bf16 where this machine computes it natively; ONNX is fp32 (``ssdn.inference.export_formats``).
An existing ``--out`` is replaced only with ``--overwrite``. safetensors holds the weights and the run config,
which ``ssdn.inference.export_formats.load_safetensors`` turns back into a module.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ssdn.errors import exit_on_user_error
from ssdn.inference.denoiser import PRECISIONS
from ssdn.inference.export_formats import FORMATS, export, export_bf16
from ssdn.training.checkpoints import load_denoiser

PROG = "python -m ssdn.export"


def _parse_param(text: str) -> list[float]:
    """``25`` or ``0.01,0.000384`` (one value per noise parameter)."""
    try:
        return [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> Path:
    """The command line; a usage error is one line and exit status 2 (``exit_on_user_error``)."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a .ckpt written by train.py")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="the file to write (atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--param", type=_parse_param, help="noise level in paper units, e.g. 25 or 0.01,0.000384")
    p.add_argument("--size", type=int, default=64, help="side of the example input traced (multiple of 32)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="network precision of a TorchScript export (auto: bf16 where this machine computes it natively); "
        "ONNX is fp32",
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    args = p.parse_args(argv)
    with exit_on_user_error(p.prog, args.debug):
        bf16 = args.format != "safetensors" and export_bf16(args.format, args.precision)
        path = export(
            load_denoiser(args.checkpoint),
            args.format,
            args.out,
            args.param,
            args.size,
            precision=args.precision,
            overwrite=args.overwrite,
        )
    print(json.dumps({"export": str(path), "format": args.format, "precision": "bf16" if bf16 else "fp32"}))
    return path


if __name__ == "__main__":
    main()
