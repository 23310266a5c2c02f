"""The exponential moving average of the weights that masking runs are evaluated with (paper App. A).

Why a warm-up: a plain EMA with decay 0.999 still gives the first weights it saw (near the random init) a share of
0.999ⁿ after n steps, 37% after 1,000 steps, which spoils every run short enough for a CPU. The decay therefore
follows TensorFlow's ``ExponentialMovingAverage(num_updates=n)``: ``min(decay, (1 + n)/(10 + n))``, the set decay
from about 10/(1 − decay) steps on, so long runs (the paper's) average as before.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor


def ema_decay(decay: float, updates: Tensor) -> Tensor:
    """The decay of the update after ``updates`` earlier ones: ``min(decay, (1 + n)/(10 + n))``."""
    return ((1.0 + updates) / (10.0 + updates)).clamp(max=decay)


class WarmupEMA(WeightAveraging):
    """Lightning weight averaging with `ema_decay`: validation runs on the average (swapped in and back), the
    module holds the average when fit ends (what the test sets are scored with), and every checkpoint's
    ``state_dict`` is the average (the raw weights sit under ``current_model_state`` for resuming)."""

    def __init__(self, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema.decay must be in [0, 1), got {decay}")
        self.decay = decay
        super().__init__(use_buffers=True, avg_fn=self._average)

    def _average(self, averaged: Tensor, current: Tensor, updates: Tensor) -> Tensor:
        d = ema_decay(self.decay, updates.to(torch.float64)).to(averaged.dtype)
        return averaged * d + current * (1 - d)
