"""CAREamics N2V2 (2-D on planes or 3-D) on bench/microscopy.py's synthetic stacks: the baseline of issue 28.

Why: the issue asks ssdn to beat the tool microscopists use, CAREamics, trained as its users would train it: its
own environment (``bench/careamics_env.sh``), its documented defaults, the same noisy training stacks and the same
CPU budget as ssdn, scored by the same convention (``bench/microscopy_score.py``). Run it with that environment's
python, never the project's:

    bash bench/careamics_env.sh /work/careamics-venv                     # once
    /work/careamics-venv/bin/python bench/careamics_baseline.py --data outputs/microscopy --level low --dims 3 \\
        --minutes 20 --out outputs/careamics/low-3d.json

What is set, and why (everything else is ``create_advanced_n2v_config``'s default, i.e. ``create_n2v_config``'s):

- ``use_n2v2=True``: the N2V2 variant the issue names (median replacement, blur-pool U-Net without the top skip).
- 2-D: ``axes="SYX"``, the Z planes of every training stack as samples (CAREamics' way to train 2-D on a stack),
  ``patch_size=[64, 64]``, ``batch_size=16``: the values of CAREamics' napari plugin default N2V configuration
  and of its reproducibility run (Convallaria).
- 3-D: ``axes="ZYX"``, ``patch_size=[8, 64, 64]``, ``batch_size=8``: the 3-D N2V example of CAREamics' guide
  (configuration save/load).
- The budget: ``max_time`` (Lightning's own stop, counted from the start of fitting) with ``num_epochs`` raised so
  that the clock, not the epoch count, ends training; or ``--steps``: Lightning's ``max_steps``.
- ``seed``: the run's seed (CAREamics draws a random one otherwise), for repeatable patches and masks.
- Prediction: tiled, 2-D tiles 128² with 48 px overlap (the guide's values), 3-D tiles 32×128×128 with 8×48×48
  overlap; a tile never exceeds the volume. CAREamics predicts from its last checkpoint (its rule for N2V).

Writes ``--out`` (JSON, refused if it exists unless ``--overwrite``): PSNR of the prediction and of the noisy input
against the clean held-out photons, training wall and CPU time, optimizer steps, epochs, peak RSS, the
configuration used, CAREamics' per-epoch loss curves and the package versions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ssdn.errors (standard library only) from this checkout
    sys.path.insert(0, str(ROOT))

from microscopy_score import score_adu  # noqa: E402  (bench/ is the script's own folder)

from ssdn.errors import UserError, exit_on_user_error  # noqa: E402

SETTINGS = {
    2: {"axes": "SYX", "patch_size": [64, 64], "batch_size": 16, "tile": (128, 128), "overlap": (48, 48)},
    3: {
        "axes": "ZYX",
        "patch_size": [8, 64, 64],
        "batch_size": 8,
        "tile": (32, 128, 128),
        "overlap": (8, 48, 48),
    },
}
_KEEP: list[Any] = []  # torch.library definitions made here, alive for the process
MANY_EPOCHS = 1_000_000  # the clock (--minutes) or the step count (--steps) ends training, not the epochs


def _allow_cpu_torch_with_pypi_torchvision() -> None:
    """Declare torchvision's two box ops when its compiled extension cannot load, so ``import torchvision`` works.

    Why: PyPI's torchvision wheel for Linux is built against CUDA torch; beside the CPU torch its extension does
    not load, and torchvision then fails at import when it registers fake kernels for ``nms`` and ``qnms``.
    CAREamics imports torchvision (a version string, LVAE transforms; N2V uses none of its ops), so declaring the
    two schemas lets it import; any call of those ops would still fail loudly. Nothing is done where the
    extension loads.
    """
    import importlib.util

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    extension = next(Path(spec.origin).parent.glob("_C*.so"), None)
    try:
        if extension is not None:
            torch.ops.load_library(str(extension))
            return
    except OSError:
        pass
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP.append(library)  # a Library deregisters its definitions when collected


def _read(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path}: missing; generate the set with bench/microscopy.py --out <data>")
    return np.asarray(tifffile.imread(path))


def _tiling(dims: int, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The prediction tiles and overlaps, each tile no larger than the volume's extent (ZYX, or YX for 2-D)."""
    spatial = shape[-dims:]
    tile = tuple(min(t, s) for t, s in zip(SETTINGS[dims]["tile"], spatial, strict=True))
    overlap = tuple(min(o, t // 2) for o, t in zip(SETTINGS[dims]["overlap"], tile, strict=True))
    return tile, overlap


def _config(args: argparse.Namespace) -> Any:
    from careamics.config import create_advanced_n2v_config

    s = SETTINGS[args.dims]
    trainer: dict[str, Any] = {"enable_model_summary": False}
    if args.minutes is not None:
        trainer["max_time"] = {"seconds": round(args.minutes * 60)}
    else:
        trainer["max_steps"] = args.steps
    return create_advanced_n2v_config(
        experiment_name=f"n2v2_{args.dims}d_{args.level}",
        data_type="array",
        axes=s["axes"],
        patch_size=s["patch_size"],
        batch_size=s["batch_size"],
        num_epochs=MANY_EPOCHS,
        use_n2v2=True,
        trainer_params=trainer,
        seed=args.seed,
    )


def _peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest child (dataloader workers), in MB."""
    return {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "largest_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train on the level's training stacks, predict the held-out volume, score it; return the record."""
    import careamics
    from careamics import CAREamist

    level_dir = args.data / args.level
    truth = json.loads(_read_text(args.data / "truth.json"))
    train_files = sorted((level_dir / "train").glob("*.ome.tif"))
    if not train_files:
        raise UserError(f"{level_dir / 'train'}: no *.ome.tif stacks; generate them with bench/microscopy.py")
    train = [_read(p).astype(np.float32) for p in train_files]
    noisy = _read(level_dir / "test" / "heldout.ome.tif")
    clean = _read(level_dir / "test" / "heldout_clean.ome.tif")
    if args.dims == 3 and min(v.shape[0] for v in train) < SETTINGS[3]["patch_size"][0]:
        raise UserError(f"{level_dir / 'train'}: stacks have fewer Z planes than the 3-D patch depth")

    config = _config(args)
    with tempfile.TemporaryDirectory(prefix="careamics-") as work:
        careamist = CAREamist(config, work_dir=args.work_dir or work, enable_progress_bar=False)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        careamist.train(train_data=train)
        train_wall, train_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        tile, overlap = _tiling(args.dims, noisy.shape)
        wall0 = time.perf_counter()
        predictions, _ = careamist.predict(
            noisy.astype(np.float32), tile_size=tile, tile_overlap=overlap, axes=SETTINGS[args.dims]["axes"]
        )
        predict_wall = time.perf_counter() - wall0
        steps, epochs = careamist.trainer.global_step, careamist.trainer.current_epoch
        losses = dataclasses.asdict(careamist.get_losses())  # per-epoch curves from CAREamics' CSV log
    prediction = np.squeeze(np.asarray(predictions[0]))
    if prediction.shape != clean.shape:
        raise RuntimeError(f"CAREamics returned shape {prediction.shape} for a volume of shape {clean.shape}")
    return {
        "method": f"CAREamics N2V2 {args.dims}D",
        "level": args.level,
        "data": str(args.data),
        "psnr_db": score_adu(prediction, clean, truth, args.level),
        "psnr_noisy_input_db": score_adu(noisy, clean, truth, args.level),
        # a prediction left in CAREamics' normalised units would show here as a mean far from the noisy one
        "mean_adu": {"prediction": float(prediction.mean()), "noisy_input": float(noisy.mean())},
        "train_wall_s": train_wall,
        "train_cpu_s": train_cpu,
        "predict_wall_s": predict_wall,
        "steps": int(steps),
        "epochs_started": int(epochs) + 1,
        "losses": losses,
        "budget": {"minutes": args.minutes} if args.minutes is not None else {"steps": args.steps},
        "peak_rss_mb": _peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "tile": list(tile),
        "tile_overlap": list(overlap),
        "config": json.loads(config.model_dump_json()),
        "versions": {
            "careamics": careamics.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "cpu": platform.processor() or platform.machine(),
    }


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"{path}: missing; generate the set with bench/microscopy.py --out <data>")
    return path.read_text()


def _write_atomic(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="bench/microscopy.py's --out folder")
    parser.add_argument("--level", choices=["low", "high"], required=True)
    parser.add_argument(
        "--dims", type=int, choices=[2, 3], required=True, help="2: N2V2 on planes; 3: on volumes"
    )
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, help="training wall-clock budget (Lightning max_time)")
    budget.add_argument("--steps", type=int, help="training optimizer steps (Lightning max_steps)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON record to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--seed", type=int, default=1, help="CAREamics' seed (positive; default 1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument(
        "--work-dir", type=Path, help="keep CAREamics' checkpoints here (default: a temp folder)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    args = parser.parse_args(argv)
    with exit_on_user_error("careamics_baseline", args.debug):
        if args.out.exists() and not args.overwrite:
            raise UserError(f"--out {args.out}: exists; pass --overwrite or choose another path")
        if (args.minutes is not None and args.minutes <= 0) or (args.steps is not None and args.steps <= 0):
            raise UserError("--minutes / --steps: must be positive")
        if args.seed <= 0:
            raise UserError(f"--seed {args.seed}: CAREamics takes positive seeds only")
        if args.threads:
            torch.set_num_threads(args.threads)
        _allow_cpu_torch_with_pypi_torchvision()
        record = run(args)
        _write_atomic(args.out, record)
    print(
        json.dumps(
            {
                k: record[k]
                for k in (
                    "method",
                    "level",
                    "psnr_db",
                    "psnr_noisy_input_db",
                    "steps",
                    "train_wall_s",
                    "peak_rss_mb",
                )
            }
        )
    )
    return record


if __name__ == "__main__":
    main()
