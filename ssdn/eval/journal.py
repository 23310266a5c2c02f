"""The resume journal of an evaluation: long runs (CBM3D ×10 on KODAK takes hours on a small CPU) survive a kill.

Every scored item of a set is appended to ``partial-<set>.jsonl`` in the journal folder as soon as it is
scored; a rerun with the same method, identity and protocol scores only the items missing from it. The scores
cannot differ: the noisy inputs are regenerated bit for bit and the methods are deterministic.
``ssdn.eval.evaluator.write_results`` removes the journals its files supersede.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ssdn.eval.results import ImageResult
from ssdn.utils import atomic_write_text

JOURNAL_PATTERN = "partial-{}.jsonl"

log = logging.getLogger(__name__)


def journal_path(folder: str | Path, set_name: str) -> Path:
    """Where the journal of ``set_name`` lives in ``folder``."""
    return Path(folder) / JOURNAL_PATTERN.format(set_name)


class Journal:
    """Append-only record of one set's scored items, so an interrupted evaluation resumes where it stopped.

    The first line is the key (method, caller's identity, protocol); a journal with another key belongs to a
    different evaluation and is started afresh (with a warning). A last line cut short by a kill is ignored.
    """

    def __init__(self, path: Path, key: dict[str, Any]) -> None:
        self.path = path
        self.key = json.loads(json.dumps(key, sort_keys=True, default=str))  # normalised as it is stored
        self.done: dict[int, ImageResult] = {}
        if path.is_file():
            self._load()
        if not self.done:
            atomic_write_text(path, json.dumps({"journal": self.key}, sort_keys=True) + "\n")

    def _load(self) -> None:
        lines = self.path.read_text().splitlines()
        try:
            header = json.loads(lines[0])["journal"] if lines else None
        except (json.JSONDecodeError, KeyError, TypeError):
            header = None
        if header != self.key:
            log.warning(
                "%s: written by another evaluation (method or protocol differ); starting afresh", self.path
            )
            return
        for number, line in enumerate(lines[1:], start=2):
            try:
                row = ImageResult(**json.loads(line))
            except (json.JSONDecodeError, TypeError) as err:
                if number == len(lines):  # the write a kill interrupted
                    break
                raise ValueError(
                    f"{self.path}, line {number}: not a scored item ({err}); delete the file"
                ) from err
            self.done[row.index] = row
        # rewrite without a cut-short tail, so appends start on a fresh line; atomically, as it holds hours of work
        body = [json.dumps({"journal": self.key}, sort_keys=True)]
        body += [json.dumps(asdict(r)) for r in self.done.values()]
        atomic_write_text(self.path, "\n".join(body) + "\n")
        log.info("%s: resuming, %d items already scored", self.path, len(self.done))

    def append(self, row: ImageResult) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(asdict(row)) + "\n")
            f.flush()
            os.fsync(f.fileno())
