"""Time-budgeted training (``train.minutes``): the schedule's length in images, set from measured throughput.

The paper's schedule (ramp-up, ramp-down, Lp annealing) is counted in images, so a run stopped by the clock
would never finish its ramp-down. Instead the total is re-planned after every step as the images seen plus what
the recent rate allows in the time left, in whole batches, and the run stops, lr at 0, when it is reached. The
rate is an exponential average of recent steps, not the mean since the start, so a machine that gets busier
near the end shortens the plan within a few steps instead of leaving the run to be cut off by the clock.
Knows nothing of Lightning.

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

    The rate is the exponential average of the seconds per image (per unit of work) of the recent steps, the
    newest weighing ``smoothing``. A session's first step pays for start-up (data workers, allocations) and is
    kept out of the average: a fresh run plans from it alone until its second step ends (pessimistic), and a
    resumed run keeps its saved plan meanwhile. After that first step the plan holds at least one more batch
    while any time is left, so no start-up, however slow, ends the run after one step. ``reserve`` holds back
    time for the work done after the last step (the final validation and checkpoint). The elapsed time is kept
    across a resume, so the resumed run trains for what is left of the budget.
    """

    def __init__(
        self, seconds: float, clock: Callable[[], float] = time.monotonic, smoothing: float = 0.2
    ) -> None:
        if seconds <= 0:
            raise ValueError(f"a time budget must be positive, got {seconds} s")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing is the newest step's weight, in (0, 1]; got {smoothing}")
        self.seconds = float(seconds)
        self.clock = clock
        self.smoothing = smoothing
        self.reserve = 0.0  #: seconds held back for the work after the last step
        self.total_images = 0
        self._batch = 0
        self._workload: Workload | None = None
        self._elapsed_before = 0.0  # seconds used by earlier sessions of a resumed run
        self._resumed = False  # a saved plan was loaded: kept until this session measures
        self._start: tuple[float, int] | None = None  # (time, images) when this session started training
        self._last: tuple[float, int] | None = None  # (time, images) after this session's latest step
        self._cost: float | None = None  # the recent seconds per image (per unit of work), averaged
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
        self._last = None
        self._measured = False
        self.total_images = max(self.total_images, images_seen + batch)
        return self.total_images

    @property
    def measured(self) -> bool:
        """True once the rate comes from this session's steps after its first (which pays for start-up): a
        plan made before is only a pessimistic guess, not worth fixing anything on (a curriculum's stages)."""
        return self._measured

    def _work(self, start: int, end: int) -> float:
        return self._workload.work(start, end) if self._workload is not None else float(end - start)

    def update(self, images_seen: int) -> int:
        """Re-plan the total after a step; equal to ``images_seen`` once the budget is spent."""
        if self._start is None:
            raise RuntimeError("TimeBudget.update before start")
        now = self.clock()
        first = self._last is None
        t0, n0 = self._start if self._last is None else self._last
        if images_seen <= n0 or now <= t0:  # no step since the last one: keep the plan
            return self.total_images
        self._last = (now, images_seen)
        cost = (now - t0) / self._work(n0, images_seen)
        if first:  # the step that paid for start-up: a plan from it alone, and only for a fresh run
            return self.total_images if self._resumed else self._plan(images_seen, cost, at_least_one=True)
        a = self.smoothing
        self._cost = a * cost + (1 - a) * self._cost if self._measured and self._cost is not None else cost
        self._measured = True
        return self._plan(images_seen, self._cost)

    def _plan(self, images_seen: int, cost: float, at_least_one: bool = False) -> int:
        """The total whose images after ``images_seen`` fill the time left at ``cost`` seconds per unit, in
        whole batches (the nearest count, so the run ends within half a step of the budget); ``at_least_one``
        more batch while any time is left, for a cost that is only a pessimistic guess."""
        left = max(self.seconds - self.elapsed() - self.reserve, 0.0)
        least = images_seen + (self._batch if at_least_one and left > 0.0 else 0)
        if self._workload is not None:
            total = self._workload.total_for(images_seen, left / cost)
        else:
            total = images_seen + self._batch * round(left / cost / self._batch)
        self.total_images = max(total, least)
        return self.total_images

    def done(self, images_seen: int) -> bool:
        return images_seen >= self.total_images

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "elapsed_s": self.elapsed(), "total_images": self.total_images}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """The used time and the plan of an earlier session (kept until this one measures its own rate, which
        may differ: another machine); the budget itself stays the configured one."""
        self._elapsed_before = float(state["elapsed_s"])
        self.total_images = int(state["total_images"])
        self._resumed = True
