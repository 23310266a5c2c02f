"""Evaluate a checkpoint or a classical method under the paper's protocol and write ``results.json``.

    python -m ssdn.evaluate --checkpoint outputs/.../checkpoints/last.ckpt --sets kodak bsd300 set14 --out DIR
    python -m ssdn.evaluate --method cbm3d_known --noise gaussian --value 25 --sets kodak --workers 2 --out DIR

Every method sees identical noisy inputs (one seeded CPU generator, see ``ssdn.eval.protocol``). Test sets are
looked up in ``--root`` or ``$SSDN_DATA_ROOT``; a missing set names the command that fetches it. Each scored
image is journalled in ``--out`` at once, so the same command after an interruption scores only the rest.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ssdn.baselines import BASELINES, build_baseline
from ssdn.errors import UserError, exit_on_user_error
from ssdn.eval.calibration import write_calibration
from ssdn.eval.evaluator import Denoiser, evaluate, write_results
from ssdn.eval.protocol import ProtocolConfig, protocol_configs
from ssdn.eval.results import Results
from ssdn.eval.settings import EvalSettings

NoiseValue = float | list[float] | dict[str, float | list[float]]


def _parse_value(tokens: Sequence[str]) -> NoiseValue:
    """``25``, ``5,50`` (a range drawn per image), or one ``name=value`` per parameter of a noise with several
    (``a=0.01 b=0.0001,0.0004``). Raises ValueError on anything else."""

    def number_or_range(text: str) -> float | list[float]:
        parts = [float(v) for v in text.split(",")]
        if len(parts) > 2:
            raise ValueError(f"{text!r} has {len(parts)} numbers; give one, or a range low,high")
        return parts[0] if len(parts) == 1 else parts

    if all("=" in t for t in tokens):
        return {name: number_or_range(v) for name, v in (t.split("=", 1) for t in tokens)}
    if len(tokens) != 1:
        raise ValueError("give one value (25, or a range 5,50) or name=value per parameter (a=0.01 b=0.0004)")
    return number_or_range(tokens[0])


def _value_or_usage_error(p: argparse.ArgumentParser, tokens: Sequence[str]) -> NoiseValue:
    try:
        return _parse_value(tokens)
    except ValueError as exc:
        p.error(f"--value {' '.join(tokens)}: {exc}")


def _protocols_or_usage_error(
    p: argparse.ArgumentParser, protocol: dict[str, Any], noise: tuple[str, Any], channels: int
) -> list[ProtocolConfig]:
    """The protocol of each set, with the noise built once here so that a bad --noise/--value is one line."""
    try:
        protocols = protocol_configs(protocol, noise, channels)
        protocols[0].noise.build()
    except (ValueError, TypeError) as exc:
        p.error(f"--noise {noise[0]} --value: {exc}")
    return protocols


def log_to_wandb(results: Results, project: str, name: str, config: dict[str, Any]) -> None:
    """The per-set means as the run summary and the per-image scores as a table (one eval run)."""
    import wandb

    from ssdn.training.loggers import wandb_mode

    run = wandb.init(project=project, name=name, job_type="eval", config=config, mode=wandb_mode("auto"))
    try:
        summary = results.to_dict()
        for set_name, data in summary["sets"].items():
            for key, value in data.items():
                if isinstance(value, int | float):
                    run.summary[f"{set_name}/{key}"] = value
        rows = [r for s in results.sets.values() for r in s.rows]
        keys = sorted({k for r in rows for k in r.psnr})
        table = wandb.Table(columns=["set", "image", "rep", "param", *[f"psnr_{k}" for k in keys]])
        for r in rows:
            param = json.dumps(r.param) if isinstance(r.param, dict) else r.param  # one column type per table
            table.add_data(r.set, r.name, r.rep, param, *[r.psnr.get(k) for k in keys])
        run.log({"per_image": table})
    finally:
        wandb.finish()


def main(argv: Sequence[str] | None = None) -> Results:
    p = argparse.ArgumentParser(prog="python -m ssdn.evaluate", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a .ckpt written by train.py")
    src.add_argument("--method", choices=tuple(BASELINES), help="a classical baseline")
    p.add_argument(
        "--noise",
        help="gaussian | poisson | impulse | poisson_gaussian | gaussian_channels (default: the checkpoint's)",
    )
    p.add_argument(
        "--value",
        nargs="+",
        help="25, or a range 5,50; for poisson_gaussian a=0.01 b=0.0001,0.0004 (default: the checkpoint's)",
    )
    p.add_argument("--sets", nargs="+", default=["kodak", "bsd300", "set14"])
    p.add_argument(
        "--repeats", type=int, default=None, help="passes per set (default: KODAK 10, BSD300 3, SET14 20)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pad-mode", choices=("authors", "per_image"), default="authors")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--bf16",
        action="store_true",
        help="run the network in bf16 autocast (faster on GPUs; default fp32, the authors' protocol)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes for classical methods")
    p.add_argument(
        "--root", default=os.environ.get("SSDN_DATA_ROOT"), help="folder holding kodak/ bsd300/ set14/"
    )
    p.add_argument("--limit", type=int, default=None, help="first N images of each set (smoke runs)")
    p.add_argument("--crop", type=int, default=None, help="centre crop of each image (smoke runs)")
    p.add_argument(
        "--out",
        required=True,
        help="folder for results.json and per_image.csv; an interrupted run into the same folder resumes",
    )
    p.add_argument("--save-images", action="store_true", help="also write the first pass's images")
    p.add_argument(
        "--calibration",
        action="store_true",
        help="also measure the posterior std's calibration (±1σ/±2σ coverage) and write calibration.json and "
        "reliability.png into --out; needs a checkpoint with a posterior, and such a run does not resume",
    )
    p.add_argument("--wandb", action="store_true", help="log the results to W&B (offline without an API key)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--allow-modified",
        action="store_true",
        help="score test-set files whose checksum differs from the registry (warns; the numbers are not the paper's)",
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    args = p.parse_args(argv)
    with exit_on_user_error(p.prog, args.debug):
        return _evaluate(p, args)


def _evaluate(p: argparse.ArgumentParser, args: argparse.Namespace) -> Results:
    if args.calibration and not args.checkpoint:
        p.error("--calibration needs --checkpoint (a classical method has no posterior std)")
    if args.value is not None:
        args.value = _value_or_usage_error(p, args.value)
    denoiser: Denoiser
    if args.checkpoint:
        from ssdn.training.checkpoints import load_denoiser

        module = load_denoiser(args.checkpoint, args.device)
        if module.dims == 3:
            raise UserError(
                f"{args.checkpoint}: a 3-D model (model.dims=3); the test sets are 2-D photos, so it is not "
                "evaluated on them; denoise volumes with python -m ssdn.denoise"
            )
        module.eval_bf16 = args.bf16
        cfg = module.hparams["config"]
        noise = (
            args.noise or cfg["noise"]["name"],
            args.value if args.value is not None else cfg["noise"]["value"],
        )
        denoiser, channels = module, module.channels
        ckpt = Path(args.checkpoint).resolve()
        identity = {
            "checkpoint": str(ckpt),
            "bytes": ckpt.stat().st_size,
            "mtime_ns": ckpt.stat().st_mtime_ns,
            "precision": "bf16" if args.bf16 else "fp32",  # scores of one precision never resume the other's
        }
    else:
        if args.noise is None or args.value is None:
            p.error("--method needs --noise and --value")
        if args.bf16:
            p.error("--bf16 applies to a --checkpoint, not to a classical method")
        denoiser = build_baseline(args.method)
        noise, channels = (args.noise, args.value), 3
        identity = {}
    out = Path(args.out)
    protocol = {k: getattr(args, k) for k in ("sets", "repeats", "seed", "pad_mode", "limit", "crop")}
    protocols = _protocols_or_usage_error(p, protocol, noise, channels)
    settings = EvalSettings(
        root=args.root,
        batch_size=args.batch_size,
        device=args.device if args.checkpoint else None,
        workers=args.workers,
        progress=not args.no_progress,
        save_images=out / "images" if args.save_images else None,
        journal_dir=None if args.calibration else out,
        identity=identity,
        calibrate=args.calibration,
        allow_modified=args.allow_modified,
    )
    results = evaluate(denoiser, protocols, settings)
    write_results(results, out)
    print(results.summary())
    if args.calibration:
        per_set = {name: s.calibration for name, s in results.sets.items() if s.calibration is not None}
        write_calibration(per_set, out, {"method": denoiser.name, **identity, "noise": results.noise})
        for name, cal in per_set.items():
            cover = "  ".join(f"±{k}: {v['observed']:.2%}" for k, v in cal["coverage"].items())
            print(f"  {name:<10} calibration {cover}  (Gaussian ideal 68.27% / 95.45%)")
    if args.wandb:
        log_to_wandb(results, "ssdn", f"eval-{denoiser.name}", {"args": vars(args), "results": str(out)})
    print(json.dumps({"results": str(out / "results.json")}))
    return results


if __name__ == "__main__":
    main()
