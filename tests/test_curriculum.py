"""data.curriculum: small crops early, data.crop_size after; stages at fractions of the planned images, the same
plan in the loader workers, exact image counts, resume in the right stage, and a time budget that plans with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.errors import ConfigCompositionException
from torch.utils.data import DataLoader

from ssdn.config.compose import ConfigError, validate_config
from ssdn.config.schema import CropStage, DataSettings
from ssdn.data.crops import RandomCropStream
from ssdn.data.curriculum import CropSchedule
from ssdn.methods.schedule import learning_rate
from ssdn.train import run
from ssdn.training.budget import TimeBudget
from ssdn.training.checkpoints import read_checkpoint
from tests.conftest import TINY, StopAfter, compose_config

STAGE = "data.curriculum=[{until:0.5,crop_size:32,batch_size:4}]"
#: 16 images: 2 batches of 32² × 4 (to the boundary at 8 images), then 4 batches of 64² × 2
RUN = (
    *TINY,
    STAGE,
    "data.crop_size=64",
    "trainer.max_steps=null",
    "train.images=16",
    "trainer.val_check_interval=100",
    "trainer.checkpoint_every_n_steps=1",
)
PLANNED = [(4, 32)] * 2 + [(2, 64)] * 4


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("stage", "key"),
    [
        ("{until:0.3,crop_size:abc,batch_size:8}", "crop_size"),
        ("{until:0.3,crop:64,batch_size:8}", "crop"),
    ],
)
def test_a_wrongly_typed_or_unknown_stage_key_fails_at_composition(
    tmp_path: Path, stage: str, key: str
) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(f"data.curriculum=[{stage}]", output_dir=tmp_path)
    assert f"full_key: {key}" in str(info.value.__cause__)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.curriculum=[{until:1.0,crop_size:64,batch_size:8}]"],
            r"data.curriculum\[0\].until=1.0: .*\(0, 1\)",
        ),
        (["data.curriculum=[{until:0,crop_size:64,batch_size:8}]"], r"data.curriculum\[0\].until=0"),
        (
            ["data.curriculum=[{until:0.5,crop_size:64,batch_size:8},{until:0.4,crop_size:96,batch_size:4}]"],
            r"data.curriculum\[1\].until=0.4: .*after the previous stage's end \(0.5\)",
        ),
        (
            ["data.curriculum=[{until:0.5,crop_size:48,batch_size:8}]"],
            r"data.curriculum\[0\].crop_size=48: .*32",
        ),
        (["data.curriculum=[{until:0.5,crop_size:64,batch_size:0}]"], r"data.curriculum\[0\].batch_size=0"),
        (
            [
                "data.curriculum=[{until:0.5,crop_size:64,batch_size:3}]",
                "trainer.devices=2",
                "data.batch_size=2",
            ],
            r"data.curriculum\[0\].batch_size=3 must be a positive multiple of the world size 2",
        ),
        (["data.curriculum=[{until:0.5,batch_size:8}]"], r"data.curriculum\[0\].crop_size not set"),
        ([STAGE, "trainer.max_steps=10"], r"data.curriculum with trainer.max_steps=10: .*train.images"),
        (
            [
                "data.curriculum=[{until:0.5,crop_size:64,batch_size:8}]",
                "method=n2v_random",
                "method.mask_cell=128",
            ],
            r"data.curriculum\[0\].crop_size=64 is not divisible by method.mask_cell=128",
        ),
    ],
)
def test_invalid_stages_are_refused_with_the_key_named(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    cfg = compose_config(*overrides, output_dir=tmp_path)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_a_run_counted_in_images_takes_the_steps_of_its_stages(tmp_path: Path) -> None:
    assert validate_config(compose_config(*RUN, output_dir=tmp_path)).max_steps == len(PLANNED)


def test_recipe_short_curriculum_is_recipe_short_with_small_crops_first(tmp_path: Path) -> None:
    cfg = compose_config("recipe=short_curriculum", output_dir=tmp_path)
    short = compose_config("recipe=short", output_dir=tmp_path)
    validate_config(cfg)
    assert [dict(s) for s in cfg.data.curriculum] == [{"until": 0.4, "crop_size": 64, "batch_size": 8}]
    cfg.data.curriculum = []
    assert cfg == short


# ------------------------------------------------------------------ the plan


def test_stages_hold_whole_batches_and_end_at_their_fractions() -> None:
    schedule = CropSchedule([CropStage(0.3, 32, 8), CropStage(0.6, 64, 4)], 96, 2)
    assert schedule.unit == 8 and schedule.boundaries(800) == [240, 480]
    assert schedule.steps_for(800) == 30 + 60 + 160
    schedule.plan(800, 0)
    assert schedule.starts.tolist() == [0, 30, 90]
    got = [(schedule.batch(b)[0].crop_size, schedule.batch(b)[1]) for b in (0, 29, 30, 89, 90, 249)]
    assert got == [(32, 0), (32, 232), (64, 240), (64, 476), (96, 480), (96, 798)]


def test_a_re_plan_never_moves_a_stage_that_may_have_been_built() -> None:
    schedule = CropSchedule([CropStage(0.4, 64, 8)], 128, 2)
    schedule.plan(1000, 0)
    assert schedule.starts.tolist() == [0, 50]
    schedule.plan(400, 10)  # shorter run: the stage moves earlier, still ahead of the batches in flight
    assert schedule.starts.tolist() == [0, 20]
    schedule.plan(100, 15)  # its start would be batch 5, but batches up to 14 may be built: it starts at 15
    assert schedule.starts.tolist() == [0, 15]
    schedule.plan(2000, 16)  # begun (15 < 16): frozen
    assert schedule.starts.tolist() == [0, 15]
    assert schedule.batch(14) == (CropStage(0.4, 64, 8), 112) and schedule.batch(16) == (
        CropStage(1.0, 128, 2),
        122,
    )


def test_work_is_pixels_and_the_total_spends_exactly_the_work_given() -> None:
    schedule = CropSchedule([CropStage(0.4, 64, 8)], 128, 2)
    planned = 64**2 * 400 + 128**2 * 600
    assert schedule.total_for(0, planned) == 1000
    schedule.plan(1000, 0)
    assert schedule.work(0, 1000) == planned and schedule.work(392, 402) == 64**2 * 8 + 128**2 * 2
    assert schedule.total_for(600, 128**2 * 100) == 700  # in the last stage: whole batches of 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_time_budget_with_a_curriculum_ends_on_time_after_the_planned_switch() -> None:
    """Steps cost their pixels (a 64² × 8 step as much as a 128² × 2 one): the switch comes at 40% of the images
    the run ends with, and the run ends on time with its schedule complete."""
    clock, schedule = FakeClock(), CropSchedule([CropStage(0.4, 64, 8)], 128, 2)
    budget = TimeBudget(100.0, clock)
    images, batches = 0, 0
    budget.start(images, 2, schedule)
    switch = None
    while not budget.done(images):
        stage, first = schedule.batch(batches)
        assert first == images  # the plan counts the images the steps saw
        if stage.crop_size == 128 and switch is None:
            switch = images
        clock.now += 0.1 + (1.0 if batches == 0 else 0.0)  # the first step pays for start-up
        images, batches = images + stage.batch_size, batches + 1
        total = budget.update(images)
        assert budget.measured == (batches > 1)  # the first step's rate includes start-up: no plan from it
        if budget.measured:
            schedule.plan(total, batches + 4)
    assert clock.now == pytest.approx(100.0, abs=0.15)
    assert images == budget.total_images and learning_rate(images, images, 3e-4) == 0.0
    assert switch == pytest.approx(0.4 * images, abs=8)


# ------------------------------------------------------------------ the crop stream


def _stream(**kw: Any) -> RandomCropStream:
    settings = DataSettings(
        train_dir="skimage:train", crop_size=64, batch_size=2, curriculum=(CropStage(0.5, 32, 4),), **kw
    )
    stream = RandomCropStream(settings)
    assert stream.schedule is not None
    stream.schedule.plan(16, 0)
    return stream


def test_the_stream_cuts_each_batch_at_its_stage_with_consecutive_sample_ids() -> None:
    stream = _stream()
    shapes = [tuple(stream.batch(b)["clean"].shape) for b in range(len(PLANNED))]
    assert shapes == [(n, 3, c, c) for n, c in PLANNED]
    ids = [int(i) for b in range(len(PLANNED)) for i in stream.sample_ids(b)]
    assert ids == list(range(16))  # every image once per epoch, as without a curriculum


def test_loader_workers_build_the_same_batches() -> None:
    stream = _stream()
    expected = [stream.batch(b) for b in range(len(PLANNED))]
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    got = [batch for batch, _ in zip(loader, range(len(PLANNED)), strict=False)]
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a["clean"], b["clean"]) and torch.equal(a["index"], b["index"])


def test_workers_see_a_re_plan_made_after_they_started() -> None:
    stream = _stream()
    schedule = stream.schedule
    assert schedule is not None
    schedule.plan(10**6, 0)  # stage 0 for a long time
    loader = iter(DataLoader(stream, batch_size=None, num_workers=2, prefetch_factor=1))
    first = [next(loader)["clean"].shape[-1] for _ in range(2)]
    schedule.plan(16, 2 + 2 * 1 + 2)  # the stage ends now: at the first batch not in flight (6)
    later = [next(loader)["clean"].shape[-1] for _ in range(6)]
    assert first + later == [32] * 6 + [64] * 2


def test_ddp_ranks_split_each_stage_batch_as_one_process_cuts_it() -> None:
    single = _stream()
    ranks = [_stream() for _ in range(2)]
    for rank, stream in enumerate(ranks):
        stream.rank, stream.world_size, stream.batch_size = rank, 2, 1
    for b in range(len(PLANNED)):
        parts = [stream.batch(b)["clean"] for stream in ranks]
        assert torch.equal(torch.cat(parts), single.batch(b)["clean"])


def test_images_smaller_than_the_largest_stage_crop_are_skipped(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    for name, side in (("big.png", 96), ("small.png", 64)):
        Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(tmp_path / name)
    settings = DataSettings(
        train_dir=tmp_path, crop_size=64, batch_size=2, curriculum=(CropStage(0.5, 96, 2),)
    )
    with pytest.warns(UserWarning, match=r"smaller than the largest data.curriculum crop_size=96: small.png"):
        stream = RandomCropStream(settings)
    assert [p.name for p in stream.files] == ["big.png"]


# ------------------------------------------------------------------ training


class _Shapes(L.Callback):
    """(batch index, batch size, crop size) of every training batch, and the module at the end."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, int]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.seen.append((pl_module.batches_seen, *batch["clean"].shape[::3]))
        self.module = pl_module


def test_a_tiny_run_trains_each_stage_at_its_planned_steps(tmp_path: Path) -> None:
    shapes = _Shapes()
    metrics = run(compose_config(*RUN, output_dir=tmp_path), extra_callbacks=[shapes])
    assert [s[1:] for s in shapes.seen] == PLANNED
    assert metrics["images_seen"] == metrics["total_images"] == shapes.module.total_images == 16


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_in_the_first_stage_continues_the_plan(tmp_path: Path, workers: int) -> None:
    common = (*RUN, f"data.num_workers={workers}")
    run(compose_config(*common, output_dir=tmp_path), extra_callbacks=[StopAfter(1)])
    saved = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["ssdn_progress"]
    assert (saved["images_seen"], saved["batches_seen"]) == (4, 1)
    assert saved["crop_plan"]["starts"] == [0, 2]
    shapes = _Shapes()
    metrics = run(compose_config(*common, "resume=auto", output_dir=tmp_path), extra_callbacks=[shapes])
    assert shapes.seen == [(b, n, c) for b, (n, c) in enumerate(PLANNED)][1:]
    assert metrics["images_seen"] == 16


def test_a_timed_run_counts_every_batch_and_trains_the_stages_in_order(tmp_path: Path) -> None:
    """On a real clock the switch depends on the speed, so this checks what must hold at any speed: the stages
    come in order, as the saved plan says, and the run ends on the planned images, counted batch by batch."""
    shapes = _Shapes()
    overrides = (*RUN, "train.minutes=0.2", "data.num_workers=0")
    metrics = run(compose_config(*overrides, output_dir=tmp_path), extra_callbacks=[shapes])
    crops = [c for _, _, c in shapes.seen]
    assert crops == sorted(crops) and crops[0] == 32
    assert metrics["images_seen"] == metrics["total_images"] == sum(n for _, n, _ in shapes.seen)
    starts = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["ssdn_progress"]["crop_plan"]["starts"]
    assert [32 if b < starts[1] else 64 for b, _, _ in shapes.seen] == crops
