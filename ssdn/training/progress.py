"""How far a run has come, and how far it will go: the images and batches seen, the skipped steps, the planned
length in images (fixed, a crop-size curriculum's, or a time budget's), and the step's random stream.

Why apart from the LightningModule: this is the run's bookkeeping, not the model. It is saved in every
checkpoint (``ssdn_progress``) and restored before training resumes, so a resumed run continues the same plan
with the same random draws; it lives outside the state dict, because weight averaging swaps and averages
tensors and these must never be averaged. Knows nothing of Lightning: the module passes it what it needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ssdn.data.curriculum import CropSchedule
from ssdn.training.budget import TimeBudget
from ssdn.training.divergence import DivergenceWatch


class TrainingProgress:
    """The progress of one run on one rank; ``minutes`` (``train.minutes``): plan the length from the clock."""

    def __init__(self, seed: int, minutes: float | None = None) -> None:
        self.seed = seed
        self.images_seen = 0
        self.batches_seen = 0
        self.skipped_steps = 0
        self.total_images = 0
        #: the finite losses' watch for a run wrecked by its learning rate (``train.stop_on_divergence``)
        self.divergence = DivergenceWatch()
        #: train.minutes: the schedule's length follows the measured throughput instead of trainer.max_steps
        self.budget = TimeBudget(60.0 * float(minutes)) if minutes else None
        self._generator: torch.Generator | None = None
        self._pending_generator_state: Tensor | None = None
        self._pending_crop_plan: dict[str, Any] | None = None
        self._last_step_time: float | None = None
        self._last_batch_images = 0
        self._val_started: float | None = None

    @property
    def fraction(self) -> float:
        """The fraction of the planned images seen, in [0, 1]."""
        return min(self.images_seen / self.total_images if self.total_images else 0.0, 1.0)

    # ------------------------------------------------------------------ the plan

    def start(
        self, batch_size: int, schedule: CropSchedule | None, planned_images: int, max_steps: int | None
    ) -> None:
        """Plan the run when training starts (or resumes): from the budget, the curriculum's ``planned_images``
        (``train.images``), or ``max_steps`` batches of ``batch_size`` (the global batch)."""
        if schedule is not None and self._pending_crop_plan is not None:
            schedule.load_state_dict(self._pending_crop_plan)
            self._pending_crop_plan = None
        if self.budget is not None:
            self.total_images = self.budget.start(self.images_seen, batch_size, schedule)
            if schedule is not None and self.images_seen:  # a fresh timed run stays in stage 0 until measured
                schedule.plan(self.total_images, self.batches_seen)
            return
        # a curriculum's stages differ in batch size: its run is counted in images (RunConfig.errors)
        if schedule is not None:
            self.total_images = planned_images
            schedule.plan(self.total_images, self.batches_seen)
            return
        if max_steps is None or max_steps <= 0:
            raise ValueError(
                "trainer.max_steps must be set: the schedule is counted in images = steps × batch"
            )
        self.total_images = max_steps * batch_size

    def step_done(self, images: int, finite: bool) -> None:
        """Count a training step of ``images`` (all ranks); a non-finite one was skipped."""
        if not finite:
            self.skipped_steps += 1
        self._last_batch_images = images
        self.images_seen += images
        self.batches_seen += 1

    def batch_end(self) -> float | None:
        """The images per second since the previous batch ended (None after the first)."""
        now = time.perf_counter()
        rate = None
        if self._last_step_time is not None:
            rate = self._last_batch_images / max(now - self._last_step_time, 1e-9)
        self._last_step_time = now
        return rate

    def replan(self, agree: Callable[[int], int], schedule: CropSchedule | None) -> bool:
        """With a time budget, re-plan the length after a step; ``agree`` makes the ranks agree on one plan (the
        smallest). Returns True when the planned images are reached and the run should stop."""
        assert self.budget is not None
        self.total_images = agree(self.budget.update(self.images_seen))
        self.budget.total_images = self.total_images
        if schedule is not None and self.budget.measured:
            schedule.plan(self.total_images, self.batches_seen + schedule.lookahead)
        return self.budget.done(self.images_seen)

    def validation_started(self) -> None:
        self._val_started = time.monotonic()

    def validation_ended(self) -> None:
        """A final validation follows the budget's stop: hold back what this one took."""
        if self.budget is not None and self._val_started is not None:
            self.budget.reserve = time.monotonic() - self._val_started

    # ------------------------------------------------------------------ the step's random stream

    def generator(self, device: torch.device, rank: int) -> torch.Generator:
        """The step's random stream: seeded per rank, saved in checkpoints so a resumed run draws the same noise."""
        if self._generator is None or self._generator.device != device:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed * 1_000_003 + rank)
            if self._pending_generator_state is not None:
                gen.set_state(self._pending_generator_state)
                self._pending_generator_state = None
            self._generator = gen
        return self._generator

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self, schedule: CropSchedule | None) -> dict[str, Any]:
        return {
            "images_seen": self.images_seen,
            "batches_seen": self.batches_seen,
            "skipped_steps": self.skipped_steps,
            "total_images": self.total_images,
            "budget": self.budget.state_dict() if self.budget is not None else None,
            "crop_plan": schedule.state_dict() if schedule is not None else None,
            "generator": self._generator.get_state() if self._generator is not None else None,
            "divergence": self.divergence.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A checkpoint's progress; the crop plan and the generator's state apply when training starts."""
        self.images_seen = int(state.get("images_seen", 0))
        self.batches_seen = int(state.get("batches_seen", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.total_images = int(state.get("total_images", 0))
        if self.budget is not None and state.get("budget"):
            self.budget.load_state_dict(state["budget"])
        self.divergence = DivergenceWatch()
        if state.get("divergence"):  # older checkpoints: measured afresh from the resumed steps
            self.divergence.load_state_dict(state["divergence"])
        self._pending_generator_state = state.get("generator")
        self._pending_crop_plan = state.get("crop_plan")
        self._generator = None
