"""The divergence watch (ssdn.training.divergence): its rule on exact loss sequences shaped like real runs that
did and did not diverge, its checkpoint round trip, and which runs are watched."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from ssdn.training.divergence import SMOOTHING, START_STEPS, DivergenceWatch
from ssdn.training.module import DenoiserModule
from ssdn.training.progress import TrainingProgress
from tests.conftest import compose_config


def _feed(watch: DivergenceWatch, losses: list[float]) -> int | None:
    """The index of the first loss at which the watch calls the run diverged, or None."""
    for i, loss in enumerate(losses):
        if watch.update(loss):
            return i
    return None


def test_the_start_is_the_mean_and_spread_of_the_first_losses() -> None:
    watch = DivergenceWatch()
    first = [float(v) for v in range(START_STEPS)]  # 0 … 19: mean 9.5, sample std √35
    assert _feed(watch, first) is None
    assert watch.start == 9.5 and watch.spread == pytest.approx(math.sqrt(35.0), rel=1e-12)
    assert watch.smoothed == watch.lowest == 9.5
    assert watch.threshold == pytest.approx(9.5 + 2 * math.sqrt(35.0), rel=1e-12)


def test_the_average_and_the_threshold_follow_the_rule_exactly() -> None:
    watch = DivergenceWatch()
    _feed(watch, [1.0, 3.0] * (START_STEPS // 2))  # start 2, spread √(20/19)
    assert watch.update(0.0) is False
    assert watch.smoothed == pytest.approx(SMOOTHING * 2.0, rel=1e-15)
    # fallen by 0.1: the margin is still the spread's, 2·√(20/19)
    assert watch.threshold == pytest.approx(2.0 + 2 * math.sqrt(20 / 19), rel=1e-12)


def test_a_falling_noisy_loss_never_diverges() -> None:
    losses = [5.0 - 0.01 * i + (0.5 if i % 2 else -0.5) for i in range(5000)]
    assert _feed(DivergenceWatch(), losses) is None


def test_a_flat_loss_that_never_learnt_is_not_called_diverged() -> None:
    losses = [(-1.0) ** i * 0.3 + (2.0 if i % 97 == 0 else 0.0) for i in range(5000)]
    assert _feed(DivergenceWatch(), losses) is None


def test_one_bad_batch_is_smoothed_away() -> None:
    """A single loss 30× the start moves a 20-step average by 1.5× the start: below start + the gain."""
    losses = [1.0] * START_STEPS + [0.0] * 200 + [30.0] + [0.0] * 200
    assert _feed(DivergenceWatch(), losses) is None


def test_a_loss_climbing_back_above_its_start_diverges() -> None:
    """As n2v_random_dense at lr 1e-3 on camera photos: 0.03 at the start, 0.006 trained, then thousands."""
    losses = [0.03] * START_STEPS + [0.006] * 300 + [0.006 * 1.5**k for k in range(40)]
    at = _feed(watch := DivergenceWatch(), losses)
    assert at is not None and at > START_STEPS + 300
    assert watch.smoothed > watch.start + (watch.start - watch.lowest)
    assert "rose to" in watch.describe() and "above its start 0.03" in watch.describe()


def test_negative_likelihood_losses_diverge_the_same_way() -> None:
    """As the 3-D net on bright stacks at lr 1e-3: an NLL falling from 3 to -3 and climbing past 9."""
    losses = [3.0] * START_STEPS + [-3.0] * 200 + [12.0] * 100
    at = _feed(DivergenceWatch(), losses)
    assert at is not None and START_STEPS + 200 < at < START_STEPS + 300


def test_the_watch_survives_a_checkpoint_mid_measurement_and_after() -> None:
    for cut in (START_STEPS // 2, START_STEPS + 50):
        losses = [1.0] * START_STEPS + [0.0] * 100 + [5.0] * 100
        whole = DivergenceWatch()
        expected = _feed(whole, losses)
        progress = TrainingProgress(seed=0)
        assert _feed(progress.divergence, losses[:cut]) is None
        resumed = TrainingProgress(seed=0)
        resumed.load_state_dict(progress.state_dict(schedule=None))
        at = _feed(resumed.divergence, losses[cut:])
        assert at is not None and expected is not None and at + cut == expected
        assert resumed.divergence == whole


def test_a_checkpoint_without_a_watch_measures_a_new_start() -> None:
    progress = TrainingProgress(seed=0)
    state = progress.state_dict(schedule=None)
    del state["divergence"]
    progress.divergence.update(1.0)
    progress.load_state_dict(state)
    assert progress.divergence == DivergenceWatch()


def test_an_annealed_loss_is_not_watched() -> None:
    """lp_anneal's |e|^p grows as p falls from 2 to 0.5: its values at different steps do not compare."""

    def module(*overrides: str) -> DenoiserModule:
        cfg = compose_config(*overrides, output_dir="unused")
        return DenoiserModule(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))

    assert module().stop_on_divergence
    assert not module("train.stop_on_divergence=false").stop_on_divergence
    annealed = module("+experiment/table3=impulse0_100-n2n")
    assert annealed.method.objective.loss == "lp_anneal" and not annealed.stop_on_divergence
