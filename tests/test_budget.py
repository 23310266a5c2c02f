"""train.minutes: the schedule's length planned from the measured throughput, so that it ends on time, complete."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import pytest
import torch

from ssdn.config.compose import ConfigError, validate_config
from ssdn.methods.schedule import learning_rate
from ssdn.train import run
from ssdn.training.budget import TimeBudget
from tests.conftest import TINY, compose_config


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _train(budget: TimeBudget, clock: FakeClock, step_s: list[float], batch: int = 2, images: int = 0) -> int:
    """Steps of the given durations (the last one repeated) until the budget stops the run; returns images."""
    budget.start(images, batch)
    for i in range(100_000):
        clock.now += step_s[min(i, len(step_s) - 1)]
        images += batch
        budget.update(images)
        if budget.done(images):
            return images
    raise AssertionError("the budget never stopped the run")


def test_a_steady_run_ends_on_time_with_the_schedule_complete() -> None:
    clock = FakeClock()
    budget = TimeBudget(10.0, clock)
    # the first step pays for start-up (1 s); then 0.1 s per batch of 2: 90 more steps fit in the 9 s left
    images = _train(budget, clock, [1.0, 0.1])
    assert clock.now == pytest.approx(10.0, abs=0.05)
    assert images == budget.total_images == 2 + 90 * 2
    assert learning_rate(images, budget.total_images, 3e-4) == 0.0


def test_the_plan_follows_a_slowdown_and_still_ends_on_time() -> None:
    clock = FakeClock()
    budget = TimeBudget(60.0, clock)
    images = _train(budget, clock, [0.5] + [0.1] * 200 + [0.3])  # 3× slower after 20 s
    assert clock.now == pytest.approx(60.0, abs=0.3)  # within one (slow) step
    assert images == budget.total_images


def test_reserve_holds_back_time_for_the_final_validation() -> None:
    clock = FakeClock()
    budget = TimeBudget(10.0, clock)
    budget.reserve = 2.0
    _train(budget, clock, [0.1])
    assert clock.now == pytest.approx(8.0, abs=0.05)


def test_resume_trains_for_what_is_left() -> None:
    clock = FakeClock()
    first = TimeBudget(10.0, clock)
    first.start(0, 2)
    for images in range(2, 82, 2):  # 4 s of 0.1 s steps, then the run is interrupted
        clock.now += 0.1
        first.update(images)
    state = first.state_dict()
    assert state["elapsed_s"] == pytest.approx(4.0)
    clock.now = 100.0  # the resumed process starts much later: only the used time counts
    second = TimeBudget(10.0, clock)
    second.load_state_dict(state)
    assert second.elapsed() == pytest.approx(4.0)
    images = _train(second, clock, [0.1], images=80)
    assert clock.now == pytest.approx(106.0, abs=0.05)
    assert images == second.total_images == 80 + 60 * 2
    assert second.state_dict()["elapsed_s"] == pytest.approx(10.0, abs=0.05)


def _lrs(
    budget: TimeBudget, clock: FakeClock, step_s: Callable[[float], float], batch: int = 2
) -> list[float]:
    """Steps of ``step_s(now)`` seconds (the first 1 s: start-up) until the budget stops the run; returns the lr
    (as a fraction of its peak) each step trained with, from the plan made before it."""
    images = 0
    budget.start(images, batch)
    lrs = []
    while not budget.done(images):
        lrs.append(learning_rate(images, budget.total_images, 1.0))
        clock.now += step_s(clock.now) if images else 1.0
        images += batch
        budget.update(images)
    return lrs


def test_a_slow_first_step_does_not_end_the_run() -> None:
    """The first step (start-up) takes 7 of the 10 s, more than 2/3 of the time left: the run goes on and
    fills the 3 s left with 0.1 s steps (a plan of round(3 / 7) = 0 more batches stopped it after one step)."""
    clock = FakeClock()
    budget = TimeBudget(10.0, clock)
    images = _train(budget, clock, [7.0, 0.1])
    assert clock.now == pytest.approx(10.0, abs=0.05)
    assert images == budget.total_images == 2 + 30 * 2


def test_while_time_is_left_the_plan_holds_another_batch() -> None:
    clock = FakeClock()
    budget = TimeBudget(10.0, clock)
    budget.start(0, 2)
    clock.now = 9.9  # a first step of 9.9 s: 0.1 s left, 1/99 of a step
    assert budget.update(2) == 4 and not budget.done(2)
    clock.now = 10.0
    assert budget.update(4) == 4 and budget.done(4)  # no time left: the plan is what was seen


def test_a_resumed_run_keeps_its_plan_through_its_start_up_step() -> None:
    """The first step of a resumed session pays for start-up (2 s here, 20 steady steps): the plan saved at the
    interruption stands until the second step measures, instead of dropping for one step."""
    clock = FakeClock()
    first = TimeBudget(10.0, clock)
    first.start(0, 2)
    for images in range(2, 82, 2):  # 4 s of 0.1 s steps
        clock.now += 0.1
        first.update(images)
    saved_plan = first.total_images
    assert saved_plan == 80 + 60 * 2
    second = TimeBudget(10.0, clock)
    second.load_state_dict(first.state_dict())
    second.start(80, 2)
    assert second.total_images == saved_plan
    clock.now += 2.0
    assert second.update(82) == saved_plan and not second.measured
    clock.now += 0.1
    assert second.update(84) == 84 + 2 * 39 and second.measured  # 3.9 s left at 0.1 s a step


@pytest.mark.parametrize(
    "step_s",
    [
        lambda now: 0.5 if now < 20 else 2.0,  # other work starts 10 s before the end: 4x slower steps
        lambda now: 0.3 + 0.2 * max(now - 15, 0),  # the machine gets busier and busier from 15 s on
    ],
    ids=["4x-slower-at-20s", "slower-and-slower-from-15s"],
)
def test_a_slowdown_near_the_end_still_ends_with_lr_at_0(step_s: Callable[[float], float]) -> None:
    """On a 30 s budget whose steps slow down near the end, the recent rate shortens the plan within a few steps
    and the last step trains at the foot of the ramp-down (< 0.1% of the peak lr). The mean rate since the first
    step kept planning fast steps, and the last step trained at 1.5% and 2.4% of the peak."""
    clock = FakeClock()
    lrs = _lrs(TimeBudget(30.0, clock), clock, step_s)
    assert clock.now == pytest.approx(30.0, abs=1.0)  # within half a (slow) step
    assert lrs[-1] < 1e-3


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TimeBudget(0.0)


def test_minutes_and_max_steps_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"trainer\.max_steps=null"):
        run(compose_config(*TINY, "train.minutes=1", output_dir=tmp_path))
    with pytest.raises(ConfigError, match=r"train\.minutes=-1"):
        run(compose_config(*TINY, "trainer.max_steps=null", "train.minutes=-1", output_dir=tmp_path))


def test_recipe_short_is_a_valid_time_budgeted_run(tmp_path: Path) -> None:
    cfg = compose_config("recipe=short", output_dir=tmp_path)
    assert validate_config(cfg).max_steps == -1  # unbounded: the budget stops the run
    assert cfg.train.minutes == 10 and cfg.optim.lr > compose_config(output_dir=tmp_path).optim.lr


class _Timer(L.Callback):
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.monotonic()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.monotonic() - self.start
        self.module = pl_module


@pytest.fixture
def one_thread() -> Iterator[None]:
    """On a shared CPU, spinning OpenMP threads make step times erratic (0.4 s to 4 s for a 32² step here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_a_30_second_budget_ends_within_10_percent_with_lr_at_0(tmp_path: Path) -> None:
    budget_s = 30.0
    timer = _Timer()
    cfg = compose_config(
        *TINY,
        "trainer.max_steps=null",
        f"train.minutes={budget_s / 60}",
        "trainer.val_check_interval=100",
        "trainer.checkpoint_every_n_steps=100",
        "data.num_workers=0",  # no worker start-up or competition for the CPU
        output_dir=tmp_path,
    )
    metrics = run(cfg, extra_callbacks=[timer])
    assert abs(timer.seconds - budget_s) <= 0.1 * budget_s
    module = timer.module
    assert module.images_seen == module.total_images >= 10  # the schedule ran to its end, in whole batches
    assert module.total_images % 2 == 0
    assert learning_rate(module.images_seen, module.total_images, 3e-4) == 0.0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["images_seen"] == saved["total_images"] == metrics["images_seen"] == module.images_seen
    assert saved["train_minutes_used"] == pytest.approx(budget_s / 60, rel=0.1)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    progress = ckpt["ssdn_progress"]
    assert progress["images_seen"] == progress["total_images"] == module.images_seen
    assert progress["budget"]["seconds"] == budget_s
    assert progress["budget"]["elapsed_s"] == pytest.approx(budget_s, rel=0.1)
