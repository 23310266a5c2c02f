"""How fast do learned noise levels converge? Trains ``sigma_global`` and ``sigma_per_image`` on Gaussian
σ = 25 and reports the first step at which the estimate is within 10% of the truth, and the final value.

    python bench/bench_sigma_estimate.py --steps 6000 --crop 32 [--train-dir ../shared/data/train-bsds500-400]

The raw global scalar starts at 0 (σ ≈ 4.9) and Adam moves it by about lr = 3e-4 per step, so it needs
several thousand steps to reach σ = 25 (raw ≈ 1.72); the estimator network moves faster.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L

from ssdn.config.compose import compose
from ssdn.train import run


class _Track(L.Callback):
    def __init__(self, every: int) -> None:
        self.every, self.trace = every, []

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,  # noqa: ARG002 -- Lightning calls the hook with these names
        outputs,  # noqa: ARG002 -- Lightning calls the hook with these names
        batch,  # noqa: ARG002 -- Lightning calls the hook with these names
        idx,  # noqa: ARG002 -- Lightning calls the hook with these names
    ) -> None:
        if trainer.global_step % self.every == 0 and "train/noise_level" in trainer.callback_metrics:
            self.trace.append((trainer.global_step, float(trainer.callback_metrics["train/noise_level"])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--crop", type=int, default=32)
    p.add_argument(
        "--train-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/train-bsds500-400")
    )
    p.add_argument("--out", default="outputs/bench_sigma")
    p.add_argument("--sources", nargs="+", default=["sigma_global", "sigma_per_image"])
    args = p.parse_args()
    truth, results = 25.0, {}
    for source in args.sources:
        track = _Track(every=10)
        cfg = compose(
            "logger=csv",
            "data=folder",
            f"data.train_dir={args.train_dir}",
            f"data.crop_size={args.crop}",
            "data.num_workers=0",
            "data.in_memory=true",
            "data.val_count=1",
            "data.val_size=64",
            f"trainer.max_steps={args.steps}",
            f"trainer.val_check_interval={args.steps}",
            f"trainer.checkpoint_every_n_steps={args.steps}",
            "trainer.log_every_n_steps=10",
            "trainer.enable_progress_bar=false",
            "example.enabled=false",
            f"noise_params={source}",
            output_dir=Path(args.out) / source,
        )
        start = time.perf_counter()
        run(cfg, extra_callbacks=[track])
        within = next((s for s, v in track.trace if abs(v - truth) <= 0.1 * truth), None)
        results[source] = {
            "steps_to_within_10pct": within,
            "final": track.trace[-1][1] if track.trace else None,
            "trace": track.trace[:: max(1, len(track.trace) // 50)],
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(source, {k: v for k, v in results[source].items() if k != "trace"}, flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"sigma_estimate-{'-'.join(args.sources)}.json").write_text(
        json.dumps(results, indent=2)
    )


if __name__ == "__main__":
    main()
