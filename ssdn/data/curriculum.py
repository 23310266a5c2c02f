"""A crop-size curriculum (``data.curriculum``): small, cheap crops early in a run, the full crop size after.

Why: on short budgets a step on 64² crops × 8 costs about what a 128² × 2 step does (the same pixels) but
sees four times the images, so the early steps, which learn local statistics, go further; the last stage,
on ``data.crop_size`` crops, teaches the larger context full-size images need (``conf/data/embedded.yaml``).
Boundaries are fractions of the run's planned length in images, and loader workers build batches ahead of a
``train.minutes`` re-plan, so the plan is a shared table changed only past the batches in flight
(`CropSchedule`): a batch's crop size, batch size and sample ids are a pure function of its index, and a
``train.images`` run is the same for any worker count and on resume. Knows nothing of Lightning.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch

from ssdn.config.schema import CropStage

NOT_STARTED = 2**62
"""The start of a stage not yet planned (a fresh ``train.minutes`` run before its first measured step)."""


class CropSchedule:
    """The stages of a run (the early ones, then ``crop_size``/``batch_size`` to the end) and their plan.

    ``starts[s]`` is the index of the first batch of stage ``s`` (``starts[0] = 0``); it lives in a shared
    memory tensor, so loader workers read the plan the training process writes (module doc).

    The training process only changes the starts at or after ``first_free``, the first batch no worker can
    have built yet (the batches seen plus ``lookahead``, the batches in flight). A re-planned boundary that
    falls inside the batches in flight starts the stage at their end, a lag of at most ``lookahead`` batches
    (``num_workers · prefetch + 2``) that only ``train.minutes`` runs see. Boundaries are rounded to multiples
    of the least common multiple of the stages' batch sizes, so each stage holds whole batches and a
    ``train.images`` run (planned once, before its first batch) ends exactly at its total.
    """

    def __init__(self, stages: Sequence[CropStage], crop_size: int, batch_size: int) -> None:
        """``stages``: the early stages, checked by the data section (``DataConfig.errors``)."""
        self.stages = (*stages, CropStage(1.0, crop_size, batch_size))
        self.unit = math.lcm(*(s.batch_size for s in self.stages))
        self.starts = torch.full((len(self.stages),), NOT_STARTED, dtype=torch.int64).share_memory_()
        self.starts[0] = 0
        #: batches that may be built but not yet trained on; the data module sets it from its loader
        self.lookahead = 2

    @property
    def largest_crop(self) -> int:
        return max(s.crop_size for s in self.stages)

    # ------------------------------------------------------------------ the plan

    def boundaries(self, total: int) -> list[int]:
        """The image offset where each early stage ends under a plan of ``total`` images (multiples of
        ``unit``, so every stage holds whole batches)."""
        ends, previous = [], 0
        for stage in self.stages[:-1]:
            end = self.unit * round(stage.until * total / self.unit)
            previous = min(max(end, previous), total // self.unit * self.unit)
            ends.append(previous)
        return ends

    def _planned(self, starts: list[int], total: int, first_free: int) -> list[int]:
        """``starts`` with every start at or after ``first_free`` set from a plan of ``total`` images."""
        starts = list(starts)
        ends = self.boundaries(total)
        for s in range(1, len(starts)):
            if starts[s] < first_free:
                continue  # its batches may have been built: never changed
            before = self.stages[s - 1].batch_size
            count = math.ceil(max(ends[s - 1] - self._offset(starts, starts[s - 1]), 0) / before)
            starts[s] = max(starts[s - 1] + count, first_free)
        return starts

    def plan(self, total: int, first_free: int) -> None:
        """Start the stages that have not begun before batch ``first_free`` where a run of ``total`` images
        puts them (at ``first_free`` when that is later)."""
        old = self.starts.tolist()
        for s, start in enumerate(self._planned(old, total, first_free)):
            if start != old[s]:
                self.starts[s] = start  # one aligned 8-byte store: a reader sees the old or the new value

    def steps_for(self, total: int) -> int:
        """The optimizer steps of a ``train.images`` run of ``total`` images (``total`` a multiple of the last
        stage's batch, as ``train.images`` is of ``data.batch_size``)."""
        starts = self._planned([0] + [NOT_STARTED] * (len(self.stages) - 1), total, 0)
        last = self.stages[-1].batch_size
        return starts[-1] + math.ceil(max(total - self._offset(starts, starts[-1]), 0) / last)

    # ------------------------------------------------------------------ reading the plan

    def _offset(self, starts: list[int], b: int) -> int:
        """Global images before batch ``b`` under ``starts``."""
        offset = 0
        for s, start in enumerate(starts):
            if b <= start:
                break
            end = starts[s + 1] if s + 1 < len(starts) else b
            offset += (min(b, end) - start) * self.stages[s].batch_size
        return offset

    def batch(self, b: int) -> tuple[CropStage, int]:
        """The stage of batch ``b`` and the global images before it (its first sample's id)."""
        starts = self.starts.tolist()  # one snapshot: the entries at or before b never change any more
        return self.stages[bisect.bisect_right(starts, b) - 1], self._offset(starts, b)

    def _image_ranges(self) -> list[tuple[int, int]]:
        """The global images ``[first, end)`` each stage covers under the current table."""
        starts = self.starts.tolist()
        firsts = [self._offset(starts, b) for b in starts]
        return [
            (first, firsts[s + 1] if s + 1 < len(firsts) else NOT_STARTED) for s, first in enumerate(firsts)
        ]

    # ------------------------------------------------------------------ work, for a time budget

    def work(self, start: int, end: int) -> float:
        """Pixels of the images ``[start, end)`` as trained: a step's cost is about proportional to them."""
        return float(
            sum(
                stage.crop_size**2 * max(0, min(end, hi) - max(start, lo))
                for stage, (lo, hi) in zip(self.stages, self._image_ranges(), strict=True)
            )
        )

    def _remaining(self, n: int, total: float, current: int) -> float:
        """Pixels from image ``n`` to ``total`` when stage ``current`` holds image ``n`` and the later stages
        end at their fractions of ``total``."""
        ends = [*(s.until * total for s in self.stages[:-1]), total]
        pixels, lo = 0.0, float(n)
        for s in range(current, len(self.stages)):
            hi = ends[s]
            pixels += self.stages[s].crop_size ** 2 * max(0.0, hi - lo)
            lo = max(lo, hi)
        return pixels

    def total_for(self, images_seen: int, work: float) -> int:
        """The planned total whose remaining images, from ``images_seen``, take ``work`` pixels; from the last
        stage on, ``images_seen`` plus whole last-stage batches, so the run ends exactly on it."""
        current = max(s for s, (lo, _) in enumerate(self._image_ranges()) if lo <= images_seen)
        smallest = min(s.crop_size for s in self.stages[current:]) ** 2
        lo, hi = float(images_seen), images_seen + work / smallest + 1.0
        for _ in range(60):  # bisection: the remaining pixels grow with the total
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self._remaining(images_seen, mid, current) < work else (lo, mid)
        last = self.stages[-1].batch_size
        return images_seen + last * max(round((hi - images_seen) / last), 0)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {"stages": [asdict(s) for s in self.stages], "starts": self.starts.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """The table of a resumed run, when it had the same stages (else the plan starts afresh)."""
        if [CropStage(**s) for s in state["stages"]] == list(self.stages):
            self.starts.copy_(torch.tensor(state["starts"], dtype=torch.int64))
