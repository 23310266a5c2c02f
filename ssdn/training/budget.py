"""Time-budgeted training (``train.minutes``): the schedule's length in images, set from measured throughput.

The paper's schedule (ramp-up, ramp-down, Lp annealing) is counted in images, so a run stopped by the clock
would never finish its ramp-down. Instead the total is re-estimated after every step as the images seen plus
what the measured rate allows in the time left, in whole batches; as the time left shrinks, so does the error
of the estimate, and the run stops, lr at 0, when the total is reached. Knows nothing of Lightning.

Where images differ in cost (a crop-size curriculum, ``ssdn.data.curriculum``), a ``Workload`` measures the
rate in its own units (pixels) and turns the work the time left allows into a total.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol


class Workload(Protocol):
    """Images of unequal cost: the rate is measured in work per second instead of images per second."""

    def work(self, start: int, end: int) -> float:
        """The work of the images ``[start, end)`` as trained."""
        ...

    def total_for(self, images_seen: int, work: float) -> int:
        """The planned total whose images after ``images_seen`` take ``work``."""
        ...


class TimeBudget:
    """Plans the schedule length of a run that must end ``seconds`` after training starts.

    The first step pays for start-up (data workers, allocations), so the rate is measured from its end on;
    until a second step has run, the first step's rate (pessimistic) is used. ``reserve`` holds back time for
    the work done after the last step (the final validation and checkpoint). The elapsed time is kept across a
    resume, so the resumed run trains for what is left of the budget.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if seconds <= 0:
            raise ValueError(f"a time budget must be positive, got {seconds} s")
        self.seconds = float(seconds)
        self.clock = clock
        self.reserve = 0.0  #: seconds held back for the work after the last step
        self.total_images = 0
        self._batch = 0
        self._workload: Workload | None = None
        self._elapsed_before = 0.0  # seconds used by earlier sessions of a resumed run
        self._start: tuple[float, int] | None = None  # (time, images) when this session started training
        self._ref: tuple[float, int] | None = None  # (time, images) after this session's first step
        self._measured = False

    def elapsed(self) -> float:
        """Seconds of the budget used so far, earlier sessions included."""
        since = self.clock() - self._start[0] if self._start is not None else 0.0
        return self._elapsed_before + since

    def start(self, images_seen: int, batch: int, workload: Workload | None = None) -> int:
        """Start (or resume) the clock; returns a provisional total (any value works: the first step's lr does
        not depend on it when starting fresh, and a resumed run keeps its saved plan until it measures).
        ``batch`` rounds the plan to whole batches; a ``workload`` plans in its own units and rounds itself."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self._batch = batch
        self._workload = workload
        self._start = (self.clock(), images_seen)
        self._ref = None
        self._measured = False
        self.total_images = max(self.total_images, images_seen + batch)
        return self.total_images

    @property
    def measured(self) -> bool:
        """True once the rate comes from this session's steps after its first (which pays for start-up): a
        plan made before is only a pessimistic guess, not worth fixing anything on (a curriculum's stages)."""
        return self._measured

    def update(self, images_seen: int) -> int:
        """Re-estimate the total after a step; equal to ``images_seen`` once the budget is spent."""
        if self._start is None:
            raise RuntimeError("TimeBudget.update before start")
        now = self.clock()
        if self._ref is None:
            self._ref = (now, images_seen)
            t0, n0 = self._start
        else:
            t0, n0 = self._ref
        if images_seen <= n0 or now <= t0:  # no step since the reference yet: keep the plan
            return self.total_images
        self._measured = (t0, n0) == self._ref
        left = max(self.seconds - self.elapsed() - self.reserve, 0.0)
        if self._workload is not None:
            rate = self._workload.work(n0, images_seen) / (now - t0)
            self.total_images = self._workload.total_for(images_seen, rate * left)
            return self.total_images
        rate = (images_seen - n0) / (now - t0)
        self.total_images = images_seen + self._batch * round(rate * left / self._batch)
        return self.total_images

    def done(self, images_seen: int) -> bool:
        return images_seen >= self.total_images

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "elapsed_s": self.elapsed(), "total_images": self.total_images}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """The used time and the plan of an earlier session; the budget itself stays the configured one."""
        self._elapsed_before = float(state["elapsed_s"])
        self.total_images = int(state["total_images"])
