"""Rows: which paper row each job fills, and which job a row shows when several ran it."""

from __future__ import annotations

from collections.abc import Iterable

from ssdn.report.jobs import Job
from ssdn.report.paper import Paper, PaperRow


def row_of(job: Job, paper: Paper) -> PaperRow | None:
    """The paper row a job belongs to: the row named by its experiment file, else by its run name."""
    names = [job.experiment.rsplit("/", 1)[-1]] if job.experiment else []
    if job.experiment and not job.experiment.startswith(("table", "figure")):
        return None  # e.g. mono/*: the authors' configs, not rows of the paper's tables
    for name in [*names, job.name]:
        row = paper.row(name)
        if row is not None:
            return row
    return None


def assign(jobs: Iterable[Job], paper: Paper) -> dict[tuple[str, str], Job]:
    """One job per paper row: the most recent finished one (older duplicates are listed as superseded)."""
    chosen: dict[tuple[str, str], Job] = {}
    for job in jobs:
        row = row_of(job, paper)
        if row is None or job.status != "ok":
            continue
        key = (row.table, row.row)
        if key not in chosen or job.mtime >= chosen[key].mtime:
            chosen[key] = job
    return chosen


def stand_in_job(row: PaperRow, chosen: dict[tuple[str, str], Job]) -> Job | None:
    """A row that names an identical configuration elsewhere (Table 2 "all" = Table 1) may use that run."""
    same = row.extra.get("same_config_as")
    return chosen.get((same["table"], same["row"])) if same else None


def failed_rows(jobs: Iterable[Job], paper: Paper) -> set[tuple[str, str]]:
    """Rows with a failed job, so a row without numbers says "failed" rather than "missing"."""
    return {(r.table, r.row) for j in jobs if j.status == "failed" and (r := row_of(j, paper)) is not None}


def row_job(row: PaperRow, chosen: dict[tuple[str, str], Job]) -> tuple[Job | None, bool]:
    """The job a row shows and whether it is a stand-in (the identical configuration's run)."""
    job = chosen.get((row.table, row.row))
    if job is not None:
        return job, False
    stand_in = stand_in_job(row, chosen)
    return stand_in, stand_in is not None
