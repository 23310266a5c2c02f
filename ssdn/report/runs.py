"""A finished training/evaluation run read back for the report (``RunRecord``) from its folder (``results.json``,
``metrics.json``, ``.hydra/``, ``csv/metrics.csv``, ``train_files.txt``), its status kept when it failed or has
no results."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssdn.config.compose import noise_tag, prepare_hydra
from ssdn.errors import UserError
from ssdn.report.paper import SETS
from ssdn.report.train_files import read_train_files, train_files_from_checkpoint

#: The parts of a run's config the report reads.
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


class ReportError(UserError, ValueError):
    """A sweep folder or W&B group that cannot be reported; the message names it."""


@dataclass
class RunRecord:
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


def config_value(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``, or ``default`` when any level is missing (old or partial configs)."""
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def _load_config(run_dir: Path) -> dict[str, Any]:
    """The run's config with the keys the report needs resolved (``${hydra:...}`` cannot be, outside Hydra)."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    prepare_hydra()
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


def _experiment(run_dir: Path) -> str | None:
    path = run_dir / ".hydra" / "hydra.yaml"
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


def read_run(run_dir: Path) -> RunRecord:
    """Everything the report uses from one run folder; a run without ``results.json`` is kept with its status."""
    config = _load_config(run_dir)
    name = config_value(config, "run.name") or run_dir.name.split("-", 1)[-1]
    results = run_dir / "results.json"
    status = "ok" if results.is_file() else "failed" if (run_dir / "failed.txt").is_file() else "no results"
    run = RunRecord(
        source=str(run_dir), name=str(name), experiment=_experiment(run_dir), status=status, config=config
    )
    if results.is_file():
        data = json.loads(results.read_text())
        sets = data.get("sets", {})
        run.psnr = {name: float(s["psnr"][s["reported"]]) for name, s in sets.items()}
        run.off_protocol = off_protocol({name: s.get("protocol", {}) for name, s in sets.items()})
        run.mtime = results.stat().st_mtime
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        run.images_seen = json.loads(metrics.read_text()).get("images_seen")
    batch = int(config_value(config, "data.batch_size", 4))
    run.curve, run.levels = _read_metrics_csv(run_dir / "csv" / "metrics.csv", batch)
    if config_value(config, "data.subset") is not None:
        run.train_files = read_train_files(run_dir)
        if run.train_files is None:
            run.train_files = train_files_from_checkpoint(run_dir)
    return run


def find_runs(root: Path) -> list[RunRecord]:
    """Every run folder under ``root`` (recursively): one with results.json, failed.txt or .hydra/config.yaml."""
    if not root.is_dir():
        raise ReportError(f"{root}: no such folder (give a sweep directory, e.g. multirun/table1)")
    dirs = {p.parent for p in root.rglob("results.json")} | {p.parent for p in root.rglob("failed.txt")}
    dirs |= {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
    runs = [read_run(d) for d in sorted(dirs)]
    if not any(j.status == "ok" for j in runs):
        failed = sum(j.status == "failed" for j in runs)
        raise ReportError(
            f"{root}: no results.json in this folder or below ({len(runs)} run folder(s), {failed} failed); "
            "give the sweep directory of finished runs (runs need eval.sets to write results.json)"
        )
    return runs
