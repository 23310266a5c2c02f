"""Figure 3 at small scale: KODAK PSNR against training cost, the blind-spot net vs masking (COPY, RANDOM; mean
and posterior mean), a masking minibatch counted 4× cheaper as in the paper.

Why: the paper's Figure 3 (σ = 25 known) puts masking-based training 20–100× behind the blind-spot net at equal
cost; this measures the same comparison at a size a CPU affords. It trains the ``figure3/*`` runs of
`bench/masking.py` (64² crops, minibatches of 4, the paper's masking density of one pixel per 32² cell, EMA,
no ramp-down; cost 1 = the blind-spot run's 75 minibatches = 300 masking minibatches) and then draws the plot
with the project's report, ``python -m ssdn.report <work>/runs --out <out>`` (``figure3.png``).

    python bench/figure3.py --data ../shared/data --work outputs/bench-masking [--out outputs/bench-masking/report]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import masking  # bench/masking.py: the script's folder is on sys.path

from ssdn.report.cli import main as report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("SSDN_DATA_ROOT", "../shared/data")))
    p.add_argument("--work", type=Path, default=Path("outputs/bench-masking"))
    p.add_argument("--out", type=Path, default=None, help="report folder (default: <work>/report)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    runs = ",".join(name for name, run in masking.RUNS.items() if run.experiment)
    masking.main(
        ["--data", str(args.data), "--work", str(args.work), "--runs", runs, "--threads", str(args.threads)]
    )
    report([str(args.work / "runs"), "--out", str(args.out or args.work / "report")])


if __name__ == "__main__":
    main()
