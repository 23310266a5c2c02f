"""Export a trained denoiser: a self-contained TorchScript or ONNX model, or the weights alone as safetensors.

    python -m ssdn.export CKPT --format torchscript --out denoiser.pt [--param 25] [--precision auto]
    python -m ssdn.export CKPT --format onnx --out denoiser.onnx [--param 25]
    python -m ssdn.export CKPT --format safetensors --out denoiser.safetensors
    python -m ssdn.export CKPT --format bioimageio --out model.zip [--param 25] [--sample image.tif]

TorchScript and ONNX hold the network plus the reported output at one noise level (``--param``, else the
learned level, else the checkpoint's), so they run without ssdn (``ssdn.inference.exported``); bioimageio wraps
the same graph for the Model Zoo (``ssdn.inference.zoo``). An existing ``--out`` is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ssdn.errors import UserError, exit_on_user_error
from ssdn.inference.denoiser import PRECISIONS
from ssdn.inference.export_formats import FORMATS, export, export_bf16
from ssdn.training.checkpoints import load_denoiser, read_checkpoint, training_bit_depth, training_intensity

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
    p.add_argument("--format", required=True, choices=(*FORMATS, "bioimageio"))
    p.add_argument("--out", required=True, help="the file to write (atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--param", type=_parse_param, help="noise level in paper units, e.g. 25 or 0.01,0.000384")
    p.add_argument(
        "--size",
        type=int,
        default=64,
        help="side of the example input traced (multiple of 32); bioimageio: also of the test input",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="network precision of a TorchScript export (auto: bf16 where this machine computes it natively); "
        "ONNX is fp32",
    )
    p.add_argument(
        "--sample",
        help="bioimageio: an image or stack whose centred --size crop is the package's test input "
        "(default: a seeded synthetic image)",
    )
    p.add_argument("--name", help="bioimageio: the model's name (default: from its method and noise model)")
    p.add_argument(
        "--author",
        action="append",
        help="bioimageio: an author of the model (repeat for several; default ssdn)",
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    args = p.parse_args(argv)
    with exit_on_user_error(p.prog, args.debug):
        _refuse_3d(args.checkpoint)
        # a graph of a model trained with data.offset / data.peak takes (v - offset) / peak: say so
        intensity = training_intensity(read_checkpoint(args.checkpoint))
        scale = {} if intensity is None else {"input_scale": intensity.record()}
        if args.format == "bioimageio":
            path = _bioimageio(args)
            print(json.dumps({"export": str(path), "format": "bioimageio", "precision": "fp32", **scale}))
            return path
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
    precision = "bf16" if bf16 else "fp32"
    print(json.dumps({"export": str(path), "format": args.format, "precision": precision, **scale}))
    return path


def _refuse_3d(checkpoint: str) -> None:
    """The exports trace and package 2-D image models; a 3-D model (``model.dims=3``) is refused, naming what
    denoises its volumes instead."""
    config = read_checkpoint(checkpoint).get("ssdn_config") or {}
    model = config.get("model") if isinstance(config, dict) else None
    if isinstance(model, dict) and model.get("dims") == 3:
        raise UserError(
            f"{checkpoint}: a 3-D model (model.dims=3); the exports are 2-D image graphs and packages, so it is "
            f"not exported; denoise its volumes with python -m ssdn.denoise {checkpoint} STACK --out DIR"
        )


def _bioimageio(args: argparse.Namespace) -> Path:
    from ssdn.inference.zoo import export_bioimageio  # bioimageio and onnx load only for this format

    if args.precision == "bf16":
        raise UserError(
            "--precision bf16 does not apply to bioimageio packages (fp32 weights run everywhere)"
        )
    checkpoint = read_checkpoint(args.checkpoint)
    return export_bioimageio(
        load_denoiser(args.checkpoint),
        args.out,
        param=args.param,
        size=args.size,
        depth=training_bit_depth(checkpoint),
        intensity=training_intensity(checkpoint),
        sample=args.sample,
        name=args.name,
        authors=args.author or ["ssdn"],
        overwrite=args.overwrite,
    )


if __name__ == "__main__":
    main()
