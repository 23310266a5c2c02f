"""Sweep results beside the paper's numbers: ``python -m ssdn.report multirun/table1 --out reports/table1``.

Why a separate tool: a sweep leaves one folder per job (``results.json``, ``metrics.json``, ``.hydra/``,
``csv/metrics.csv``); comparing them with the paper by hand invites copying errors. The report maps every job
to its row of the paper (by the ``experiment`` it ran, else by its run name), and writes Tables 1, 2 and 3 in
the paper's layout as Markdown and CSV with our number, the paper's number and the difference for every
cell. Rows that were not run stay missing ("—"); a number is never invented. The paper's numbers live in
``ssdn/paper_results.json`` (typed from the paper, one entry per cell with its table, row and set).

Plots (PNG): validation PSNR against images seen per noise setting, the Figure 3 analogue (PSNR against
training cost in the paper's units) and the learned noise level against the truth for unknown-parameter rows.
``--wandb-group`` reads the runs of a W&B group instead of (or beside) folders; it needs an API key.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssdn.config import noise_tag, register_resolvers
from ssdn.utils import atomic_write, atomic_write_text

PAPER_FILE = Path(__file__).with_name("paper_results.json")
SETS = ("kodak", "bsd300", "set14")
MISSING = "—"
#: Training cost unit of Figure 3: 0.5M blind-spot minibatches of 4 images.
FIGURE3_UNIT_IMAGES = 2_000_000
#: Masking-based minibatches are about 4× cheaper than blind-spot ones (no rotated copies inside the net).
MASKING_COST = 0.25
TABLE_FILES = {"1": "table1", "2": "table2", "3": "table3"}
LEVEL_LABELS = {"gaussian": "σ (8-bit units)", "poisson": "λ", "impulse": "α"}
#: The parts of a job's config the report reads.
CONFIG_KEYS = (
    "run",
    "noise",
    "method",
    "noise_params",
    "data",
    "train",
    "eval",
    "channels",
    "ema",
    "schedule",
)


class ReportError(ValueError):
    """A sweep folder or W&B group that cannot be reported; the message names it."""


# ------------------------------------------------------------------------------------------ paper numbers


@dataclass(frozen=True)
class PaperRow:
    table: str
    row: str
    noise: str
    noise_label: str
    method: str
    known: str
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Paper:
    """The paper's rows (layout) and cells ``(table, row, set) -> PSNR``."""

    rows: list[PaperRow]
    cells: dict[tuple[str, str, str], float]
    titles: dict[str, str]
    set_labels: dict[str, str]

    def row(self, name: str) -> PaperRow | None:
        return next((r for r in self.rows if r.row == name), None)

    def table(self, table: str) -> list[PaperRow]:
        return [r for r in self.rows if r.table == table]


def load_paper(path: Path = PAPER_FILE) -> Paper:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    base = {"table", "row", "noise", "noise_label", "method", "known"}
    rows = [
        PaperRow(**{k: r[k] for k in base}, extra={k: v for k, v in r.items() if k not in base})
        for r in data["rows"]
    ]
    cells = {(c["table"], c["row"], c["set"]): float(c["psnr"]) for c in data["cells"]}
    return Paper(rows=rows, cells=cells, titles=dict(data["tables"]), set_labels=dict(data["sets"]))


# ------------------------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One training/evaluation run, read from its folder or from W&B."""

    source: str
    name: str
    experiment: str | None
    status: str  # ok | failed | no results
    config: dict[str, Any]
    psnr: dict[str, float] = field(default_factory=dict)
    off_protocol: list[str] = field(default_factory=list)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (images seen, val/psnr)
    levels: list[tuple[float, float]] = field(default_factory=list)  # (images seen, train/noise_level)
    images_seen: float | None = None
    train_files: list[str] | None = None
    mtime: float = 0.0

    @property
    def noise(self) -> str:
        """The authors' noise tag (``gauss25``), or ``?`` when the config is unknown."""
        n = self.config.get("noise") or {}
        return noise_tag(n["name"], n["value"]) if "name" in n and "value" in n else "?"

    @property
    def average(self) -> float | None:
        """The paper's Average: the mean of the three sets, only when all three were evaluated."""
        vals = [self.psnr[s] for s in SETS if s in self.psnr]
        return sum(vals) / len(vals) if len(vals) == len(SETS) else None


def _get(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def _load_config(job_dir: Path) -> dict[str, Any]:
    """The job's config with the keys the report needs resolved (``${hydra:...}`` cannot be, outside Hydra)."""
    path = job_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    register_resolvers()
    cfg = OmegaConf.load(path)
    out: dict[str, Any] = {}
    for key in CONFIG_KEYS:
        try:
            value = OmegaConf.select(cfg, key)
            out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        except OmegaConfBaseException:  # an interpolation that resolves only inside Hydra: leave it out
            continue
    return out


def experiment_choice(key: str, value: Any) -> str | None:
    """``table1/gauss25-n2c`` from a Hydra choice: ``experiment=table1/gauss25-n2c`` or, as a glob sweep
    selects it, ``+experiment/table1=gauss25-n2c``; None for any other key."""
    key = key.lstrip("+~")
    if not value or value == "null":
        return None
    if key == "experiment":
        return str(value)
    if key.startswith("experiment/"):
        return f"{key.split('/', 1)[1]}/{value}"
    return None


def _experiment(job_dir: Path) -> str | None:
    path = job_dir / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return None
    choices = OmegaConf.select(OmegaConf.load(path), "hydra.runtime.choices", default=None) or {}
    return next((e for k, v in choices.items() if (e := experiment_choice(k, v))), None)


def off_protocol(protocols: dict[str, dict[str, Any]]) -> list[str]:
    """Why an evaluation is not the paper's protocol (empty when it is): such numbers are not comparable.

    ``protocols`` maps a set name to its protocol (``limit``, ``crop``, ``repeats``, ``pad_mode``)."""
    from ssdn.eval.protocol import default_repeats

    reasons: dict[str, None] = {}  # ordered and unique
    repeats = []
    for name, p in protocols.items():
        for key in ("limit", "crop"):
            if p.get(key) is not None:
                reasons[f"{key}={p[key]}"] = None
        if p.get("pad_mode") not in (None, "authors"):
            reasons[f"pad_mode={p['pad_mode']}"] = None
        if p.get("repeats") is not None and int(p["repeats"]) != default_repeats(name):
            repeats.append(f"{name}×{p['repeats']}")
    if repeats:
        reasons["repeats " + " ".join(repeats)] = None
    return list(reasons)


def _read_metrics_csv(path: Path, batch: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Validation PSNR and learned noise level against images seen, from Lightning's CSV log.

    Validation rows carry no image count: it comes from the training row of the same step when logged, else
    (step + 1) × the global batch (the step counter is zero-based)."""
    if not path.is_file():
        return [], []
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    seen = {int(r["step"]): float(r["train/images_seen"]) for r in rows if r.get("train/images_seen")}

    def images(r: dict[str, str]) -> float:
        step = int(r["step"])
        return seen.get(step, float((step + 1) * batch))

    curve = [(images(r), float(r["val/psnr"])) for r in rows if r.get("val/psnr")]
    levels = [(images(r), float(r["train/noise_level"])) for r in rows if r.get("train/noise_level")]
    return sorted(curve), sorted(levels)


def train_files_from_checkpoint(job_dir: Path) -> list[str] | None:
    """The training files the DataModule recorded in the job's last checkpoint (None without one)."""
    ckpt = job_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        return None
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    train = (state.get("DenoisingDataModule") or {}).get("train") or {}
    files = train.get("files")
    return [str(f) for f in files] if files is not None else None


def write_train_files(job_dir: Path) -> Path | None:
    """Write ``train_files.txt`` (one path a line) from the checkpoint, so a subset run shows what it saw."""
    files = train_files_from_checkpoint(job_dir)
    if files is None:
        return None
    path = job_dir / "train_files.txt"
    atomic_write_text(path, "".join(f"{f}\n" for f in files))
    return path


class RecordTrainFiles(Callback):
    """Hydra callback: after each job, list its training files in ``train_files.txt`` (Table 2 subsets).

    Enable it for a sweep with ``++hydra.callbacks.train_files._target_=ssdn.report.RecordTrainFiles``."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        write_train_files(Path(config.hydra.runtime.output_dir))


def _train_files(job_dir: Path) -> list[str] | None:
    listing = job_dir / "train_files.txt"
    if listing.is_file():
        return [line for line in listing.read_text().splitlines() if line]
    return None


def read_job(job_dir: Path) -> Job:
    """Everything the report uses from one job folder; a job without ``results.json`` is kept with its status."""
    config = _load_config(job_dir)
    name = _get(config, "run.name") or job_dir.name.split("-", 1)[-1]
    results = job_dir / "results.json"
    status = "ok" if results.is_file() else "failed" if (job_dir / "failed.txt").is_file() else "no results"
    job = Job(
        source=str(job_dir), name=str(name), experiment=_experiment(job_dir), status=status, config=config
    )
    if results.is_file():
        data = json.loads(results.read_text())
        sets = data.get("sets", {})
        job.psnr = {name: float(s["psnr"][s["reported"]]) for name, s in sets.items()}
        job.off_protocol = off_protocol({name: s.get("protocol", {}) for name, s in sets.items()})
        job.mtime = results.stat().st_mtime
    metrics = job_dir / "metrics.json"
    if metrics.is_file():
        job.images_seen = json.loads(metrics.read_text()).get("images_seen")
    batch = int(_get(config, "data.batch_size", 4))
    job.curve, job.levels = _read_metrics_csv(job_dir / "csv" / "metrics.csv", batch)
    if _get(config, "data.subset") is not None:
        job.train_files = _train_files(job_dir)
        if job.train_files is None:
            job.train_files = train_files_from_checkpoint(job_dir)
    return job


def find_jobs(root: Path) -> list[Job]:
    """Every job folder under ``root`` (recursively): one with results.json, failed.txt or .hydra/config.yaml."""
    if not root.is_dir():
        raise ReportError(f"{root}: no such folder (give a sweep directory, e.g. multirun/table1)")
    dirs = {p.parent for p in root.rglob("results.json")} | {p.parent for p in root.rglob("failed.txt")}
    dirs |= {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
    jobs = [read_job(d) for d in sorted(dirs)]
    if not any(j.status == "ok" for j in jobs):
        failed = sum(j.status == "failed" for j in jobs)
        raise ReportError(
            f"{root}: no results.json in this folder or below ({len(jobs)} job folder(s), {failed} failed); "
            "give the sweep directory of finished jobs (runs need eval.sets to write results.json)"
        )
    return jobs


# ------------------------------------------------------------------------------------------------ W&B


def wandb_credentials() -> bool:
    """Whether W&B could be asked at all: an API key in the environment or in ~/.netrc, and not disabled."""
    if os.environ.get("WANDB_MODE", "").lower() in ("disabled", "offline", "dryrun"):
        return False
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def read_wandb_group(group: str, project: str, entity: str | None) -> list[Job]:
    """The runs of one W&B group as jobs: results from the summary (``test/<set>/psnr``), curves from history."""
    if not wandb_credentials():
        raise ReportError(
            f"--wandb-group {group}: no W&B API key (set WANDB_API_KEY or run `wandb login`, and do not set "
            "WANDB_MODE=disabled/offline); report sweep folders instead"
        )
    import wandb

    api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    jobs = []
    for run in api.runs(path, filters={"group": group}):
        config = dict(run.config)
        overrides = config.get("hydra_overrides") or []
        pairs = (o.split("=", 1) for o in overrides if "=" in o)
        experiment = next((e for k, v in pairs if (e := experiment_choice(k, v))), None)
        psnr = {s: float(run.summary[f"test/{s}/psnr"]) for s in SETS if f"test/{s}/psnr" in run.summary}
        e = config.get("eval") or {}
        reasons = off_protocol({name: e for name in psnr})
        batch = int(_get(config, "data.batch_size", 4))
        curve = [
            ((float(r["trainer/global_step"]) + 1) * batch, float(r["val/psnr"]))
            for r in run.scan_history(keys=["val/psnr", "trainer/global_step"])
        ]
        levels = [
            (float(r["train/images_seen"]), float(r["train/noise_level"]))
            for r in run.scan_history(keys=["train/noise_level", "train/images_seen"])
        ]
        jobs.append(
            Job(
                source=run.url,
                name=run.name,
                experiment=experiment,
                status="ok" if psnr else ("failed" if run.state in ("failed", "crashed") else "no results"),
                config=config,
                psnr=psnr,
                off_protocol=reasons,
                curve=sorted(curve),
                levels=sorted(levels),
                images_seen=run.summary.get("images_seen"),
                mtime=float(run.summary.get("_timestamp", 0.0)),
            )
        )
    if not jobs:
        raise ReportError(f"--wandb-group {group}: no runs in W&B project {path}")
    return jobs


# ------------------------------------------------------------------------------------------------ mapping


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


def _stand_in(row: PaperRow, chosen: dict[tuple[str, str], Job]) -> Job | None:
    """A row that names an identical configuration elsewhere (Table 2 "all" = Table 1) may use that run."""
    same = row.extra.get("same_config_as")
    return chosen.get((same["table"], same["row"])) if same else None


# ------------------------------------------------------------------------------------------------ tables


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _csv_num(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def _status(job: Job | None, stand_in: bool, failed: bool) -> str:
    """The CSV's status: ok (with where it came from and protocol caveats), failed or missing."""
    if job is None:
        return "failed" if failed else "missing"
    tags = ["ok"]
    if stand_in:
        tags.append(f"from {job.source} (same configuration)")
    if job.off_protocol:
        tags.append("off-protocol: " + "; ".join(job.off_protocol))
    return ", ".join(tags)


def _mark(job: Job | None, stand_in: bool) -> str:
    """Markdown marks on our numbers: * off-protocol, † taken from the identical configuration's run."""
    return "" if job is None else ("*" if job.off_protocol else "") + ("†" if stand_in else "")


@dataclass
class Cell:
    ours: float | None
    paper: float | None

    @property
    def diff(self) -> float | None:
        return None if self.ours is None or self.paper is None else self.ours - self.paper


def _failed_rows(jobs: Iterable[Job], paper: Paper) -> set[tuple[str, str]]:
    return {(r.table, r.row) for j in jobs if j.status == "failed" and (r := row_of(j, paper)) is not None}


def _row_job(row: PaperRow, chosen: dict[tuple[str, str], Job]) -> tuple[Job | None, bool]:
    job = chosen.get((row.table, row.row))
    if job is not None:
        return job, False
    stand_in = _stand_in(row, chosen)
    return stand_in, stand_in is not None


def sets_table(
    table: str, paper: Paper, jobs: list[Job], chosen: dict[tuple[str, str], Job]
) -> tuple[str, str]:
    """Table 1 or 3 in the paper's layout: (Markdown, CSV)."""
    failed = _failed_rows(jobs, paper)
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
        job, stand_in = _row_job(row, chosen)
        cells = {
            s: Cell(job.psnr.get(s) if job else None, paper.cells.get((table, row.row, s))) for s in SETS
        }
        cells["average"] = Cell(job.average if job else None, paper.cells.get((table, row.row, "average")))
        status = _status(job, stand_in, (table, row.row) in failed)
        noise = row.noise_label if row.noise != previous else ""
        previous = row.noise
        mark = _mark(job, stand_in)
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
                "" if job is None or job.images_seen is None else int(job.images_seen),
                "" if job is None else job.source,
            ]
        )
    md += ["", *_footnotes(paper.table(table), chosen)]
    return "\n".join(md) + "\n", buf.getvalue()


def _footnotes(rows: list[PaperRow], chosen: dict[tuple[str, str], Job]) -> list[str]:
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


def table2(paper: Paper, jobs: list[Job], chosen: dict[tuple[str, str], Job]) -> tuple[str, str]:
    """Table 2 (average PSNR against training-set size, ± rotation augmentation): (Markdown, CSV)."""
    failed = _failed_rows(jobs, paper)
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
            job, stand_in = _row_job(row, chosen)
            cell = Cell(job.average if job else None, paper.cells.get(("2", row.row, "average")))
            mark = _mark(job, stand_in)
            line.append(
                f"{_fmt(cell.ours)}{mark if cell.ours is not None else ''} / {_fmt(cell.paper)} / "
                f"{_fmt(cell.diff, signed=True)}"
            )
            files = job.train_files if job else None
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
                    *[_csv_num(job.psnr.get(s) if job else None) for s in SETS],
                    "" if files is None else len(files),
                    digest,
                    _status(job, stand_in, ("2", row.row) in failed),
                    "" if job is None else job.source,
                ]
            )
        md.append("| " + " | ".join(line) + " |")
    md += ["", *_footnotes(rows, chosen)]
    if any(_stand_in(r, chosen) and ("2", r.row) not in chosen for r in rows):
        md.append("- † the identical Table 1 configuration's run (same data, length and method).")
    return "\n".join(md) + "\n", buf.getvalue()


def runs_csv(jobs: list[Job], paper: Paper, chosen: dict[tuple[str, str], Job]) -> str:
    """Every job found, its row and whether the tables use it (superseded duplicates, failures, strays)."""
    used = {id(j) for j in chosen.values()}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["run", "name", "experiment", "table", "row", "status", "used", "off_protocol", "images_seen", *SETS]
    )
    for job in jobs:
        row = row_of(job, paper)
        w.writerow(
            [
                job.source,
                job.name,
                job.experiment or "",
                row.table if row else "",
                row.row if row else "",
                job.status,
                "yes" if id(job) in used else "no",
                "; ".join(job.off_protocol),
                "" if job.images_seen is None else int(job.images_seen),
                *[_csv_num(job.psnr.get(s)) for s in SETS],
            ]
        )
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ plots


def _figure(n: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return path


def plot_curves(jobs: list[Job], out: Path) -> list[Path]:
    """Validation PSNR against images seen, one plot per noise setting, one line per row."""
    by_noise: dict[str, list[Job]] = {}
    for job in jobs:
        if job.curve:
            by_noise.setdefault(job.noise, []).append(job)
    written = []
    for noise, group in sorted(by_noise.items()):
        fig, (ax,) = _figure()
        for job in group:
            x, y = zip(*job.curve, strict=True)
            ax.plot(x, y, marker="." if len(x) < 20 else None, label=job.name)
        ax.set(
            xlabel="training images seen", ylabel="validation PSNR (dB)", title=f"{noise}: validation PSNR"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, out / f"val_psnr-{noise}.png"))
    return written


def training_cost(job: Job, images: float) -> float:
    """Figure 3's x axis: blind-spot minibatches / 0.5M; a masking minibatch counts 4× cheaper."""
    cost = images / FIGURE3_UNIT_IMAGES
    return cost * MASKING_COST if _get(job.config, "method.masking") else cost


def plot_figure3(jobs: list[Job], paper: Paper, out: Path) -> Path | None:
    """The Figure 3 analogue: Kodak validation PSNR against training cost, masking vs the blind-spot net."""
    group = [
        j for j in jobs if (j.experiment or "").startswith("figure3/") or _get(j.config, "method.masking")
    ]
    group = [j for j in group if j.curve or "kodak" in j.psnr]
    if not group:
        return None
    fig, (ax,) = _figure()
    for job in group:
        line = None
        if job.curve:
            (line,) = ax.plot(
                [training_cost(job, x) for x, _ in job.curve], [y for _, y in job.curve], label=job.name
            )
        if "kodak" in job.psnr and job.images_seen:
            ax.plot(
                [training_cost(job, float(job.images_seen))],
                [job.psnr["kodak"]],
                marker="o",
                ls="none",
                color=line.get_color() if line else None,
                label=f"{job.name}: KODAK (full protocol)",
            )
    ref = paper.cells.get(("figure3", "gauss25-blindspot-sigma_known-ema", "kodak"))
    if ref is not None:
        ax.axhline(ref, color="grey", ls="--", lw=1)
        ax.plot(
            [1.0],
            [ref],
            marker="*",
            color="black",
            ls="none",
            ms=10,
            label=f"paper: blind-spot, 0.5M minibatches ({ref:.2f} dB)",
        )
    ax.set(
        xlabel="training cost (1 = 0.5M blind-spot or 2M masking minibatches)",
        ylabel="KODAK PSNR (dB)",
        title="Figure 3: masking vs blind-spot (σ = 25 known, posterior mean)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "figure3.png")


def plot_noise_levels(jobs: list[Job], out: Path) -> Path | None:
    """Learned noise level (paper units: σ, λ, α) against the truth for the unknown-parameter rows.

    The log holds the batch mean of the estimates: for a fixed level it should approach the true value, for a
    range it should stay inside it (around the mean of the uniform draw)."""
    group = [j for j in jobs if j.levels]
    if not group:
        return None
    fig, axes = _figure(len(group))
    for ax, job in zip(axes, group, strict=False):
        x, y = zip(*job.levels, strict=True)
        ax.plot(x, y, label="estimated (batch mean)")
        value = _get(job.config, "noise.value")
        if isinstance(value, list):
            ax.axhspan(float(value[0]), float(value[1]), color="green", alpha=0.1, label="true range")
            ax.axhline(
                (float(value[0]) + float(value[1])) / 2, color="green", ls="--", lw=1, label="range mean"
            )
        elif value is not None:
            ax.axhline(float(value), color="green", ls="--", lw=1, label="true value")
        ax.set(
            xlabel="training images seen",
            ylabel=LEVEL_LABELS.get(_get(job.config, "noise.name"), "noise level"),
            title=job.name,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out / "noise_level.png")


# ------------------------------------------------------------------------------------------------ main


def build_report(jobs: list[Job], out: Path, paper: Paper | None = None, plots: bool = True) -> list[Path]:
    """Write the tables (Markdown + CSV), ``runs.csv``, ``report.md`` and the plots into ``out``."""
    paper = paper or load_paper()
    chosen = assign(jobs, paper)
    written: list[Path] = []
    sections = []
    for table in ("1", "3", "2"):
        md, table_csv = (
            table2(paper, jobs, chosen) if table == "2" else sets_table(table, paper, jobs, chosen)
        )
        stem = out / TABLE_FILES[table]
        atomic_write_text(stem.with_suffix(".md"), md)
        atomic_write_text(stem.with_suffix(".csv"), table_csv)
        written += [stem.with_suffix(".md"), stem.with_suffix(".csv")]
        sections.append(md)
    atomic_write_text(out / "runs.csv", runs_csv(jobs, paper, chosen))
    written.append(out / "runs.csv")
    images: list[Path] = []
    if plots:
        images += plot_curves(jobs, out)
        images += [p for p in (plot_figure3(jobs, paper, out), plot_noise_levels(jobs, out)) if p is not None]
    counts = {s: sum(j.status == s for j in jobs) for s in ("ok", "failed", "no results")}
    head = [
        "# Results beside the paper",
        "",
        f"{len(jobs)} job(s): {counts['ok']} with results, {counts['failed']} failed, "
        f"{counts['no results']} without results; {len(chosen)} paper row(s) filled. Every job: `runs.csv`.",
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
    args = p.parse_args(argv)
    if not args.sweeps and not args.wandb_group:
        p.error("give at least one sweep directory or --wandb-group")
    try:
        jobs = [j for root in args.sweeps for j in find_jobs(root)]
        if args.wandb_group:
            jobs += read_wandb_group(args.wandb_group, args.wandb_project, args.wandb_entity)
    except ReportError as exc:
        raise SystemExit(f"ssdn.report: {exc}") from exc
    written = build_report(jobs, args.out, plots=not args.no_plots)
    print(f"wrote {args.out / 'report.md'} ({len(written)} files)")
    return written


if __name__ == "__main__":
    main()
