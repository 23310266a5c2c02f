"""bf16 against fp32 evaluation on full KODAK images, on a CPU without bf16 arithmetic.

Why: the evaluator runs the network in fp32 (the authors' protocol) and offers bf16 autocast as a speed option;
what bf16 costs in PSNR must be known on full images. On a CPU without AVX-512 BF16 (this AVX2 machine) torch's
bf16 convolutions fall back to a slow reference path (a 256² blind-spot pass: ~3 s fp32, over 100 s bf16), so
24 full images cannot run in real bf16 here. bf16 autocast's numerics are reproduced in fp32 instead: every
convolution's weights, bias and input rounded to bf16, its output rounded to bf16; products of bf16 values are
exact in fp32 and the sums accumulate in fp32, as bf16 convolutions do. The other ops of the U-Net (leaky ReLU,
max pooling, the decoder's sum of two convs, concatenation, padding, rotation) select, copy, add or scale
values, so rounding at the next convolution's input gives what autocast gives (to a rare last-bit tie).
``--check`` first compares the emulation with real bf16 autocast on a small input: its mean |difference| to
real bf16 must be far below fp32's.

    python bench/bf16_emulated.py [--checkpoint CKPT] [--root ../shared/data] [--check] [--limit N]

Prints and writes ``outputs/bench-bf16/summary.json``: KODAK PSNR of both (uint8, the paper's protocol, ×1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssdn.eval.evaluator import evaluate
from ssdn.eval.protocol import protocol_configs
from ssdn.eval.settings import EvalSettings
from ssdn.training.checkpoints import load_denoiser
from ssdn.utils import atomic_write_json

CHECKPOINT = "outputs/bench-noisy-only/runs/gauss-synthetic/checkpoints/best.ckpt"


def _round(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).to(x.dtype)


@contextlib.contextmanager
def bf16_numerics() -> Iterator[None]:
    """Within: every conv and transposed conv computes as under bf16 autocast (bf16 operands, fp32 sums, a bf16
    result). The U-Net calls ``F.conv2d``/``F.conv_transpose2d`` on weights it derives (the decoder's folded
    upsampling kernels), so the functions are wrapped, not the layers: autocast also rounds at the call."""
    originals = {name: getattr(F, name) for name in ("conv2d", "conv_transpose2d")}

    def emulated(orig: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def conv(
            x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *a: Any, **k: Any
        ) -> torch.Tensor:
            return _round(orig(_round(x), _round(weight), None if bias is None else _round(bias), *a, **k))

        return conv

    for name, orig in originals.items():
        setattr(F, name, emulated(orig))
    try:
        yield
    finally:
        for name, orig in originals.items():
            setattr(F, name, orig)


def check(net: nn.Module, side: int = 64) -> dict[str, float]:
    """Emulated against real bf16 autocast on one random ``side``² input (slow here, hence small)."""
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fp32 = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            real = net(x).float()
        with bf16_numerics():
            emulated = net(x)
    return {
        "mean_abs_emulated_vs_bf16": float((emulated - real).abs().mean()),
        "mean_abs_fp32_vs_bf16": float((fp32 - real).abs().mean()),
        "max_abs_emulated_vs_bf16": float((emulated - real).abs().max()),
        "max_abs_fp32_vs_bf16": float((fp32 - real).abs().max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=CHECKPOINT)
    p.add_argument("--root", default="../shared/data", help="folder holding kodak/")
    p.add_argument("--limit", type=int, default=None, help="only the first N KODAK images")
    p.add_argument("--check", action="store_true", help="first compare the emulation with real bf16 (64²)")
    p.add_argument("--out", type=Path, default=Path("outputs/bench-bf16"))
    args = p.parse_args()
    module = load_denoiser(args.checkpoint, "cpu")
    summary: dict[str, object] = {"checkpoint": args.checkpoint}
    if args.check:
        summary["check"] = check(module.net)
        print(json.dumps(summary["check"]))
    noise = (module.hparams["config"]["noise"]["name"], module.hparams["config"]["noise"]["value"])
    protocols = protocol_configs(
        {"sets": ["kodak"], "repeats": 1, "limit": args.limit}, noise, module.channels
    )
    for name, ctx in (("fp32", contextlib.nullcontext()), ("bf16_emulated", bf16_numerics())):
        start = time.monotonic()
        with ctx:
            results = evaluate(module, protocols, EvalSettings(root=args.root, progress=False))
        s = results.sets["kodak"]
        summary[name] = {"psnr": s.psnr[s.reported], "count": s.count, "seconds": time.monotonic() - start}
        print(f"{name}: KODAK ×1 {s.psnr[s.reported]:.4f} dB over {s.count} images")
    fp32, bf16 = summary["fp32"], summary["bf16_emulated"]
    assert isinstance(fp32, dict) and isinstance(bf16, dict)
    summary["bf16_minus_fp32_db"] = bf16["psnr"] - fp32["psnr"]
    print(f"bf16 − fp32: {summary['bf16_minus_fp32_db']:+.4f} dB")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "summary.json", summary)


if __name__ == "__main__":
    main()
