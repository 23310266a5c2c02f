"""Training schedules driven by the number of images seen, as the authors' code does.

Counting in images (not steps) keeps the schedule identical whatever the batch size or the number of devices.
"""

from __future__ import annotations

import math


def learning_rate(
    images_seen: float, total_images: float, base_lr: float, rampup: float = 0.1, rampdown: float = 0.3
) -> float:
    """Cosine ramp-up over the first ``rampup`` fraction, squared-cosine ramp-down over the last ``rampdown``.

    Ramp-up: ``lr·(1 − cos(πt))/2`` with ``t = n/(rampup·T)``; ramp-down: ``lr·((1 + cos(πt))/2)²`` with
    ``t = (n − (1 − rampdown)·T)/(rampdown·T)``. Fractions of 0 switch a ramp off (masking runs use EMA
    instead of a ramp-down, App. A).
    """
    if total_images <= 0:
        raise ValueError(f"total_images must be positive, got {total_images}")
    n = min(max(images_seen, 0.0), total_images)
    lr = base_lr
    if rampup > 0 and n < rampup * total_images:
        t = n / (rampup * total_images)
        lr *= (1.0 - math.cos(math.pi * t)) / 2.0
    if rampdown > 0 and n > (1.0 - rampdown) * total_images:
        t = (n - (1.0 - rampdown) * total_images) / (rampdown * total_images)
        lr *= ((1.0 + math.cos(math.pi * t)) / 2.0) ** 2
    return lr


def lp_exponent(
    images_seen: float, total_images: float, start: float = 2.0, end: float = 0.5, fraction: float = 0.75
) -> float:
    """Loss exponent for impulse-noise N2N / μ-only: linear from ``start`` to ``end`` over the first
    ``fraction`` of training, then held (paper §4.3; authors: ``max(0.5, 2 − 2·n/T)``)."""
    if total_images <= 0:
        raise ValueError(f"total_images must be positive, got {total_images}")
    t = min(max(images_seen / (fraction * total_images), 0.0), 1.0)
    return start + (end - start) * t
