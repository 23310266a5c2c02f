"""Rows: which paper row each run fills, and which run a row shows when several ran it."""

from __future__ import annotations

from collections.abc import Iterable

from ssdn.report.paper import Paper, PaperRow
from ssdn.report.runs import RunRecord


def row_of(run: RunRecord, paper: Paper) -> PaperRow | None:
    """The paper row a run belongs to: the row named by its experiment file, else by its run name."""
    names = [run.experiment.rsplit("/", 1)[-1]] if run.experiment else []
    if run.experiment and not run.experiment.startswith(("table", "figure")):
        return None  # e.g. mono/*: the authors' configs, not rows of the paper's tables
    for name in [*names, run.name]:
        row = paper.row(name)
        if row is not None:
            return row
    return None


def assign(runs: Iterable[RunRecord], paper: Paper) -> dict[tuple[str, str], RunRecord]:
    """One run per paper row: the most recent finished one (older duplicates are listed as superseded)."""
    chosen: dict[tuple[str, str], RunRecord] = {}
    for run in runs:
        row = row_of(run, paper)
        if row is None or run.status != "ok":
            continue
        key = (row.table, row.row)
        if key not in chosen or run.mtime >= chosen[key].mtime:
            chosen[key] = run
    return chosen


def stand_in_run(row: PaperRow, chosen: dict[tuple[str, str], RunRecord]) -> RunRecord | None:
    """A row that names an identical configuration elsewhere (Table 2 "all" = Table 1) may use that run."""
    same = row.extra.get("same_config_as")
    return chosen.get((same["table"], same["row"])) if same else None


def failed_rows(runs: Iterable[RunRecord], paper: Paper) -> set[tuple[str, str]]:
    """Rows with a failed run, so a row without numbers says "failed" rather than "missing"."""
    return {(r.table, r.row) for j in runs if j.status == "failed" and (r := row_of(j, paper)) is not None}


def row_run(row: PaperRow, chosen: dict[tuple[str, str], RunRecord]) -> tuple[RunRecord | None, bool]:
    """The run a row shows and whether it is a stand-in (the identical configuration's run)."""
    run = chosen.get((row.table, row.row))
    if run is not None:
        return run, False
    stand_in = stand_in_run(row, chosen)
    return stand_in, stand_in is not None
