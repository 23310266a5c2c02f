"""ssdn.training.progress: the run's bookkeeping apart from the model: its plan, its counts, its random stream,
and a checkpoint round trip that continues the same plan and draws."""

from __future__ import annotations

import pytest
import torch

from ssdn.config.schema import CropStage
from ssdn.data.curriculum import CropSchedule
from ssdn.training.progress import TrainingProgress


def test_plan_from_max_steps_and_counts() -> None:
    progress = TrainingProgress(seed=3)
    progress.start(batch_size=4, schedule=None, planned_images=800, max_steps=10)
    assert progress.total_images == 40 and progress.fraction == 0.0
    progress.step_done(4, finite=True)
    progress.step_done(4, finite=False)
    assert (progress.images_seen, progress.batches_seen, progress.skipped_steps) == (8, 2, 1)
    assert progress.fraction == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"trainer\.max_steps must be set"):
        TrainingProgress(seed=0).start(batch_size=4, schedule=None, planned_images=800, max_steps=None)


def test_a_curriculum_run_is_planned_in_images() -> None:
    progress, schedule = TrainingProgress(seed=0), CropSchedule([CropStage(0.5, 32, 4)], 64, 2)
    progress.start(batch_size=2, schedule=schedule, planned_images=16, max_steps=-1)
    assert progress.total_images == 16 and schedule.starts.tolist() == [0, 2]


def test_checkpoint_round_trip_continues_the_plan_and_the_draws() -> None:
    progress = TrainingProgress(seed=5)
    progress.start(batch_size=2, schedule=None, planned_images=0, max_steps=6)
    gen = progress.generator(torch.device("cpu"), rank=1)
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(5 * 1_000_003 + 1).get_state())
    torch.rand(3, generator=gen)
    progress.step_done(2, finite=True)
    state = progress.state_dict(schedule=None)
    expected = torch.rand(4, generator=gen)

    resumed = TrainingProgress(seed=5)
    resumed.load_state_dict(state)
    assert (resumed.images_seen, resumed.batches_seen, resumed.total_images) == (2, 1, 12)
    assert torch.equal(torch.rand(4, generator=resumed.generator(torch.device("cpu"), rank=1)), expected)


def test_a_time_budget_replans_to_the_smallest_plan_of_the_ranks() -> None:
    progress = TrainingProgress(seed=0, minutes=1.0)
    assert progress.budget is not None
    progress.start(batch_size=2, schedule=None, planned_images=0, max_steps=-1)
    progress.step_done(2, finite=True)
    assert not progress.replan(lambda plan: 100, schedule=None)
    assert progress.total_images == progress.budget.total_images == 100  # what the ranks agreed on
    progress.step_done(2, finite=True)
    assert progress.replan(lambda plan: 4, schedule=None)  # another rank planned 4 images: all stop there
    assert progress.total_images == progress.budget.total_images == 4
