"""The paper's numbers: Tables 1-3 and Figure 3 as typed from the paper, one entry per cell.

Why a data file: every number is compared against ours and shown beside it, so it is typed once, reviewed
once (tests/test_report.py checks cells against the paper), and never computed or filled in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAPER_FILE = Path(__file__).with_name("paper_results.json")
#: The paper's three test sets, in its column order.
SETS = ("kodak", "bsd300", "set14")


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
