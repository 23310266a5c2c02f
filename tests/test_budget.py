"""train.minutes: the schedule's length planned from the measured throughput, so that it ends on time, complete."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
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
