"""Tables 1-3 in the paper's layout (Markdown) and as CSV: our number, the paper's and Δ for every cell;
``runs.csv`` lists every run found. Rows that were not run stay missing ("—"); a number is never invented."""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssdn.report.paper import SETS, Paper, PaperRow
from ssdn.report.rows import failed_rows, row_of, row_run, stand_in_run
from ssdn.report.runs import RunRecord

MISSING = "—"


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _csv_num(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def _status(run: RunRecord | None, stand_in: bool, failed: bool) -> str:
    """The CSV's status: ok (with where it came from and protocol caveats), failed or missing."""
    if run is None:
        return "failed" if failed else "missing"
    tags = ["ok"]
    if stand_in:
        tags.append(f"from {run.source} (same configuration)")
    if run.off_protocol:
        tags.append("off-protocol: " + "; ".join(run.off_protocol))
    return ", ".join(tags)


def _mark(run: RunRecord | None, stand_in: bool) -> str:
    """Markdown marks on our numbers: * off-protocol, † taken from the identical configuration's run."""
    return "" if run is None else ("*" if run.off_protocol else "") + ("†" if stand_in else "")


@dataclass
class Cell:
    ours: float | None
    paper: float | None

    @property
    def diff(self) -> float | None:
        return None if self.ours is None or self.paper is None else self.ours - self.paper


def sets_table(
    table: str, paper: Paper, runs: list[RunRecord], chosen: dict[tuple[str, str], RunRecord]
) -> tuple[str, str]:
    """Table 1 or 3 in the paper's layout: (Markdown, CSV)."""
    failed = failed_rows(runs, paper)
    known = "σ known?" if table == "1" else "λ/α known?"
    cols = [*SETS, "average"]
    head = (
        ["Noise", "Method", known] + [h for c in cols for h in (paper.set_labels[c], "paper", "Δ")] + ["run"]
    )
    md = [f"### {paper.titles[table]}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "table",
            "noise",
            "row",
            "method",
            "known",
            *[f"{c}_{k}" for c in cols for k in ("ours", "paper", "diff")],
            "status",
            "images_seen",
            "run",
        ]
    )
    previous = None
    for row in paper.table(table):
        run, stand_in = row_run(row, chosen)
        cells = {
            s: Cell(run.psnr.get(s) if run else None, paper.cells.get((table, row.row, s))) for s in SETS
        }
        cells["average"] = Cell(run.average if run else None, paper.cells.get((table, row.row, "average")))
        status = _status(run, stand_in, (table, row.row) in failed)
        noise = row.noise_label if row.noise != previous else ""
        previous = row.noise
        mark = _mark(run, stand_in)
        md.append(
            "| "
            + " | ".join(
                [noise, row.method, row.known]
                + [
                    v
                    for c in cols
                    for v in (
                        _fmt(cells[c].ours) + (mark if cells[c].ours is not None else ""),
                        _fmt(cells[c].paper),
                        _fmt(cells[c].diff, signed=True),
                    )
                ]
                + [status.split(",")[0] + mark]
            )
            + " |"
        )
        w.writerow(
            [table, row.noise, row.row, row.method, row.known]
            + [
                v
                for c in cols
                for v in (_csv_num(cells[c].ours), _csv_num(cells[c].paper), _csv_num(cells[c].diff))
            ]
            + [
                status,
                "" if run is None or run.images_seen is None else int(run.images_seen),
                "" if run is None else run.source,
            ]
        )
    md += ["", *_footnotes(paper.table(table), chosen)]
    return "\n".join(md) + "\n", buf.getvalue()


def _footnotes(rows: list[PaperRow], chosen: dict[tuple[str, str], RunRecord]) -> list[str]:
    notes = [
        "Our numbers: PSNR (dB) of the reported output, mean over the replicated set; paper: Laine et al. "
        "2019; Δ = ours − paper; — = not run (never filled in)."
    ]
    if any(j.off_protocol for j in chosen.values()):
        notes.append(
            "\\* evaluated off the paper's protocol (limit/crop/repeats; see the CSV): not comparable."
        )
    for r in rows:
        if "note" in r.extra:
            notes.append(f"{r.row}: {r.extra['note']}.")
    return [f"- {n}" for n in notes]


def table2(paper: Paper, runs: list[RunRecord], chosen: dict[tuple[str, str], RunRecord]) -> tuple[str, str]:
    """Table 2 (average PSNR against training-set size, ± rotation augmentation): (Markdown, CSV)."""
    failed = failed_rows(runs, paper)
    rows = paper.table("2")
    sizes: list[Any] = list(dict.fromkeys(r.extra["images"] for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    head = ["Method", *[("all" if s == "all" else f"{s:,}".replace(",", " ")) for s in sizes]]
    md = [
        f"### {paper.titles['2']}",
        "",
        "Each cell: ours / paper / Δ (average of KODAK, BSD300, SET14).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "table",
            "row",
            "method",
            "images",
            "rotate_aug",
            "average_ours",
            "average_paper",
            "average_diff",
            *[f"{s}_ours" for s in SETS],
            "train_files",
            "train_files_sha1",
            "status",
            "run",
        ]
    )
    for method in methods:
        line = [method]
        for size in sizes:
            row = next(r for r in rows if r.method == method and r.extra["images"] == size)
            run, stand_in = row_run(row, chosen)
            cell = Cell(run.average if run else None, paper.cells.get(("2", row.row, "average")))
            mark = _mark(run, stand_in)
            line.append(
                f"{_fmt(cell.ours)}{mark if cell.ours is not None else ''} / {_fmt(cell.paper)} / "
                f"{_fmt(cell.diff, signed=True)}"
            )
            files = run.train_files if run else None
            digest = (
                hashlib.sha1("\n".join(Path(f).name for f in files).encode()).hexdigest()[:12]
                if files
                else ""
            )
            w.writerow(
                [
                    "2",
                    row.row,
                    method,
                    size,
                    row.extra["rotate_aug"],
                    _csv_num(cell.ours),
                    _csv_num(cell.paper),
                    _csv_num(cell.diff),
                    *[_csv_num(run.psnr.get(s) if run else None) for s in SETS],
                    "" if files is None else len(files),
                    digest,
                    _status(run, stand_in, ("2", row.row) in failed),
                    "" if run is None else run.source,
                ]
            )
        md.append("| " + " | ".join(line) + " |")
    md += ["", *_footnotes(rows, chosen)]
    if any(stand_in_run(r, chosen) and ("2", r.row) not in chosen for r in rows):
        md.append("- † the identical Table 1 configuration's run (same data, length and method).")
    return "\n".join(md) + "\n", buf.getvalue()


def runs_csv(runs: list[RunRecord], paper: Paper, chosen: dict[tuple[str, str], RunRecord]) -> str:
    """Every run found, its row and whether the tables use it (superseded duplicates, failures, strays)."""
    used = {id(j) for j in chosen.values()}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["run", "name", "experiment", "table", "row", "status", "used", "off_protocol", "images_seen", *SETS]
    )
    for run in runs:
        row = row_of(run, paper)
        w.writerow(
            [
                run.source,
                run.name,
                run.experiment or "",
                row.table if row else "",
                row.row if row else "",
                run.status,
                "yes" if id(run) in used else "no",
                "; ".join(run.off_protocol),
                "" if run.images_seen is None else int(run.images_seen),
                *[_csv_num(run.psnr.get(s)) for s in SETS],
            ]
        )
    return buf.getvalue()
