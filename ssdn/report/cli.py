"""Sweep results beside the paper's numbers: ``python -m ssdn.report multirun/table1 --out reports/table1``.

Why a separate tool: a sweep leaves one folder per run (``results.json``, ``metrics.json``, ``.hydra/``,
``csv/metrics.csv``); comparing them with the paper by hand invites copying errors. The report maps every run
to its row of the paper (by the ``experiment`` it ran, else by its run name), and writes Tables 1, 2 and 3 in
the paper's layout as Markdown and CSV with our number, the paper's number and the difference for every
cell. Rows that were not run stay missing ("—"); a number is never invented. The paper's numbers live in
``ssdn/report/paper_results.json`` (typed from the paper, one entry per cell with its table, row and set).

Plots (PNG): validation PSNR against images seen per noise setting, the Figure 3 analogue (PSNR against
training cost in the paper's units) and the learned noise level against the truth for unknown-parameter rows.
``--wandb-group`` reads the runs of a W&B group instead of (or beside) folders; it needs an API key.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ssdn.errors import exit_on_user_error
from ssdn.report.paper import Paper, load_paper
from ssdn.report.plots import plot_curves, plot_figure3, plot_noise_levels
from ssdn.report.rows import assign
from ssdn.report.runs import RunRecord, find_runs
from ssdn.report.tables import runs_csv, sets_table, table2
from ssdn.report.wandb_group import read_wandb_group
from ssdn.utils import atomic_write_text

TABLE_FILES = {"1": "table1", "2": "table2", "3": "table3"}


def build_report(
    runs: list[RunRecord], out: Path, paper: Paper | None = None, plots: bool = True
) -> list[Path]:
    """Write the tables (Markdown + CSV), ``runs.csv``, ``report.md`` and the plots into ``out``."""
    paper = paper or load_paper()
    chosen = assign(runs, paper)
    written: list[Path] = []
    sections = []
    for table in ("1", "3", "2"):
        md, table_csv = (
            table2(paper, runs, chosen) if table == "2" else sets_table(table, paper, runs, chosen)
        )
        stem = out / TABLE_FILES[table]
        atomic_write_text(stem.with_suffix(".md"), md)
        atomic_write_text(stem.with_suffix(".csv"), table_csv)
        written += [stem.with_suffix(".md"), stem.with_suffix(".csv")]
        sections.append(md)
    atomic_write_text(out / "runs.csv", runs_csv(runs, paper, chosen))
    written.append(out / "runs.csv")
    images: list[Path] = []
    if plots:
        images += plot_curves(runs, out)
        images += [p for p in (plot_figure3(runs, paper, out), plot_noise_levels(runs, out)) if p is not None]
    counts = {s: sum(j.status == s for j in runs) for s in ("ok", "failed", "no results")}
    head = [
        "# Results beside the paper",
        "",
        f"{len(runs)} run(s): {counts['ok']} with results, {counts['failed']} failed, "
        f"{counts['no results']} without results; {len(chosen)} paper row(s) filled. Every run: `runs.csv`.",
        "",
    ]
    plots_md = ["### Plots", "", *[f"![{p.stem}]({p.name})" for p in images], ""] if images else []
    atomic_write_text(out / "report.md", "\n".join([*head, *sections, *plots_md]))
    return [*written, *images, out / "report.md"]


def main(argv: Sequence[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(prog="python -m ssdn.report", description=__doc__.split("\n\n")[0])
    p.add_argument("sweeps", nargs="*", type=Path, help="sweep/run directories (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="folder for the tables, plots and report.md")
    p.add_argument("--wandb-group", help="also read the runs of this W&B group (needs an API key)")
    p.add_argument("--wandb-project", default="ssdn")
    p.add_argument("--wandb-entity", default=None)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    args = p.parse_args(argv)
    if not args.sweeps and not args.wandb_group:
        p.error("give at least one sweep directory or --wandb-group")
    with exit_on_user_error(p.prog, args.debug):
        runs = [j for root in args.sweeps for j in find_runs(root)]
        if args.wandb_group:
            runs += read_wandb_group(args.wandb_group, args.wandb_project, args.wandb_entity)
        written = build_report(runs, args.out, plots=not args.no_plots)
    print(f"wrote {args.out / 'report.md'} ({len(written)} files)")
    return written
