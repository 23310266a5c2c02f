"""ssdn.inference.refine.random_replacing_refinement: reproducible from its generator alone, exact at p = 0 and p = 1,
the mean of the passes' outputs, argument errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ssdn.inference.refine import random_replacing_refinement


def _images(shape: tuple[int, ...] = (2, 3, 5, 7)) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=g, dtype=torch.float64), torch.rand(
        shape, generator=g, dtype=torch.float64
    )


def _blur(x: Tensor) -> Tensor:
    """A stand-in denoiser that mixes neighbouring pixels and channels."""
    return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1) + x.mean(dim=1, keepdim=True)


def _refine(noisy: Tensor, first: Tensor, seed: int, **kw: object) -> Tensor:
    args: dict[str, object] = {"denoise": _blur, "passes": 3, "replace_prob": 0.3}
    args.update(kw)
    return random_replacing_refinement(noisy, first, generator=torch.Generator().manual_seed(seed), **args)  # type: ignore[arg-type]


def test_reproducible_from_the_generator_alone() -> None:
    noisy, first = _images()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = _refine(noisy, first, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is neither used nor advanced
    torch.manual_seed(999)
    assert torch.equal(_refine(noisy, first, seed=7), a)
    assert not torch.equal(_refine(noisy, first, seed=8), a)


def test_extremes_with_identity() -> None:
    noisy, first = _images()
    assert torch.equal(_refine(noisy, first, seed=0, denoise=lambda x: x, replace_prob=0.0), first)
    assert torch.equal(_refine(noisy, first, seed=0, denoise=lambda x: x, replace_prob=1.0), noisy)


def test_mean_of_passes_by_hand() -> None:
    """1×2×1×3 images, 2 passes: the masks are the generator's first two (1, 1, 1, 3) float64 draws < p, one
    per pixel for both channels."""
    noisy = torch.tensor([[[[1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0]]]], dtype=torch.float64)
    first = torch.zeros_like(noisy)
    g = torch.Generator().manual_seed(5)
    draws = [torch.rand((1, 1, 1, 3), generator=g, dtype=torch.float64) for _ in range(2)]
    masks = [(d < 0.5).double() for d in draws]
    assert 0 < sum(m.sum() for m in masks) < 6  # the case mixes kept and replaced pixels

    def double(x: Tensor) -> Tensor:
        return 2 * x

    expected = (2 * noisy * masks[0] + 2 * noisy * masks[1]) / 2
    out = _refine(noisy, first, seed=5, denoise=double, passes=2, replace_prob=0.5)
    assert torch.equal(out, expected)
    # the same mask for both channels of a pixel
    assert torch.equal(out[0, 0] != 0, out[0, 1] != 0)


def test_replacement_rate() -> None:
    noisy, first = torch.ones(1, 2, 100, 100), torch.zeros(1, 2, 100, 100)
    out = _refine(noisy, first, seed=1, denoise=lambda x: x, passes=1, replace_prob=0.25)
    assert torch.equal(out[:, 0], out[:, 1])
    assert abs(out.mean().item() - 0.25) < 0.02  # 10 000 Bernoulli(0.25) pixels: sd 0.0043


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"passes": 0}, "passes must be an integer >= 1"),
        ({"passes": 2.0}, "passes must be"),
        ({"passes": True}, "passes must be"),
        ({"replace_prob": -0.1}, r"replace_prob must be in \[0, 1\]"),
        ({"replace_prob": 1.5}, "replace_prob must be"),
        ({"replace_prob": float("nan")}, "replace_prob must be"),
    ],
)
def test_bad_arguments(kw: dict[str, object], match: str) -> None:
    noisy, first = _images()
    with pytest.raises(ValueError, match=match):
        _refine(noisy, first, seed=0, **kw)


def test_shape_mismatch() -> None:
    noisy, first = _images()
    with pytest.raises(ValueError, match="noisy and first_estimate must be"):
        _refine(noisy, first[:, :, :4], seed=0)
