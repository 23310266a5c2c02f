"""A process pool for classical (CPU) denoisers: images in parallel, results in order.

Classical methods are deterministic, so running them in ``workers`` processes cannot change a number; each
worker receives the denoiser once (its initializer), then only batches.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from torch import Tensor

from ssdn.eval.protocol import NoisyItem

_WORKER_DENOISER: Any = None


def _worker_init(denoiser: Any) -> None:
    global _WORKER_DENOISER
    _WORKER_DENOISER = denoiser


def _worker_denoise(noisy: Tensor, params: Tensor) -> dict[str, Tensor]:
    return _WORKER_DENOISER.denoise(noisy, params)


def run_in_pool(
    denoiser: Any, work: Iterable[tuple[list[NoisyItem], Tensor, Tensor]], workers: int
) -> Iterator[tuple[list[NoisyItem], dict[str, Tensor]]]:
    """In-order parallel map with a bounded queue, so a set's noisy images are never all in memory at once."""
    ctx = multiprocessing.get_context("spawn")  # fork after torch/BLAS threads started can deadlock
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(denoiser,)) as pool:
        pending: deque[tuple[list[NoisyItem], Future]] = deque()
        for batch, noisy, params in work:
            pending.append((batch, pool.submit(_worker_denoise, noisy, params)))
            if len(pending) >= 2 * workers:
                b, fut = pending.popleft()
                yield b, fut.result()
        while pending:
            b, fut = pending.popleft()
            yield b, fut.result()
