"""Divergence: a run whose smoothed loss climbs back above where it began has been wrecked by its learning rate.

Why: ``recipe=short``'s lr 1e-3 diverged for the 3-D net on bright microscopy stacks and for
``n2v_random_dense`` on camera photos (bench/README.md); each run went on to its end and wrote a model that
scored far below its own noisy input, with nothing said. Non-finite steps are skipped and counted elsewhere
(``TrainingProgress``); this watches the finite ones. Knows nothing of Lightning: the module feeds it losses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ssdn.errors import UserError

START_STEPS = 20
"""Finite steps whose losses define the start: the untrained net's level and the loss's own step-to-step spread."""

SMOOTHING = 0.95
"""The exponential average's decay per step (≈ 20 steps), so one bad batch never stops a run."""

SPREAD_MULTIPLE = 2.0
"""The smoothed loss must also clear the start by this many standard deviations of the first losses."""


class TrainingDiverged(UserError):
    """A run stopped because its loss diverged; the message names ``optim.lr`` and what to do."""


@dataclass
class DivergenceWatch:
    """Watches the finite training losses of one run; saved in checkpoints with the run's progress.

    The run has diverged when the smoothed loss exceeds ``start + max(start − lowest, 2·spread)``: back above the
    untrained net's level by as much as training had gained, and beyond the noise of the first losses (a run
    that never learnt is not called diverged for its fluctuations). ``start`` and ``spread`` are the mean and
    standard deviation of the first ``START_STEPS`` finite losses; the average starts at ``start``.
    """

    first: list[float] = field(default_factory=list)
    start: float | None = None
    spread: float = 0.0
    smoothed: float = 0.0
    lowest: float = 0.0

    def update(self, loss: float) -> bool:
        """Record one finite step's loss; True when the run has diverged."""
        if self.start is None:
            self.first.append(float(loss))
            if len(self.first) == START_STEPS:
                mean = math.fsum(self.first) / START_STEPS
                var = math.fsum((v - mean) ** 2 for v in self.first) / (START_STEPS - 1)
                self.start, self.spread = mean, math.sqrt(var)
                self.smoothed = self.lowest = mean
                self.first = []
            return False
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * float(loss)
        self.lowest = min(self.lowest, self.smoothed)
        return self.smoothed > self.threshold

    @property
    def threshold(self) -> float:
        """The smoothed loss above which the run has diverged (+inf until the start is measured)."""
        if self.start is None:
            return math.inf
        margin = max(self.start - self.lowest, SPREAD_MULTIPLE * self.spread)
        return self.start + margin if margin > 0 else math.inf

    def describe(self) -> str:
        """The figures behind a verdict, for the one-line message."""
        return (
            f"the smoothed train/loss rose to {self.smoothed:.4g}, above its start {self.start:.4g} "
            f"(lowest {self.lowest:.4g})"
        )

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first = [float(v) for v in state.get("first", [])]
        start = state.get("start")
        self.start = None if start is None else float(start)
        self.spread = float(state.get("spread", 0.0))
        self.smoothed = float(state.get("smoothed", 0.0))
        self.lowest = float(state.get("lowest", 0.0))
