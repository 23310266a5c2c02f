"""Learning-rate and loss-exponent schedules: exact values at the points the formulas pin down."""

import math

import pytest

from ssdn.methods.schedule import learning_rate, lp_exponent

T = 1000.0
LR = 3e-4


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, 0.0),  # ramp-up starts at zero
        (50, LR / 2),  # half-way up the cosine
        (100, LR),  # end of the 10% ramp-up
        (400, LR),  # plateau
        (700, LR),  # start of the 30% ramp-down
        (850, LR * 0.25),  # ((1 + cos(π/2)) / 2)² = 1/4: the ramp-down is squared
        (1000, 0.0),
        (5000, 0.0),  # clamped past the end
    ],
)
def test_learning_rate_exact(n: float, expected: float) -> None:
    assert learning_rate(n, T, LR) == pytest.approx(expected, abs=1e-15)


def test_learning_rate_rampdown_is_squared_cosine() -> None:
    t = 0.3
    n = 700 + t * 300
    assert learning_rate(n, T, LR) == pytest.approx(LR * ((1 + math.cos(math.pi * t)) / 2) ** 2)


def test_learning_rate_without_rampdown_stays_flat() -> None:
    assert learning_rate(999, T, LR, rampdown=0.0) == LR


def test_learning_rate_rejects_empty_schedule() -> None:
    with pytest.raises(ValueError, match="total_images"):
        learning_rate(0, 0, LR)


@pytest.mark.parametrize(
    ("frac", "expected"), [(0.0, 2.0), (0.375, 1.25), (0.75, 0.5), (0.9, 0.5), (1.0, 0.5)]
)
def test_lp_exponent_matches_authors(frac: float, expected: float) -> None:
    assert lp_exponent(frac * T, T) == pytest.approx(expected)
    assert lp_exponent(frac * T, T) == pytest.approx(max(0.5, 2 - 2 * frac))
