"""Masking-based training: stratified pixel choice, the COPY / RANDOM replacement strategies, and that it learns."""

import pytest
import torch

from ssdn.config.schema import Masking, MethodConfig, Objective
from ssdn.methods import StepBatch, build_method
from ssdn.methods.masking import gather_pixels, mask_pixels, stratified_coords
from ssdn.noise import build_noise


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_stratified_one_pixel_per_cell() -> None:
    ys, xs = stratified_coords(3, 256, 256, 32, _gen(), torch.device("cpu"))
    assert ys.shape == xs.shape == (3, 64)  # 64 pixels per 256² crop, as the paper
    cells = (ys // 32) * 8 + xs // 32
    for row in cells:
        assert sorted(row.tolist()) == list(range(64))


def test_stratified_is_seeded_and_varies_per_image() -> None:
    a = stratified_coords(2, 64, 64, 32, _gen(1), torch.device("cpu"))
    b = stratified_coords(2, 64, 64, 32, _gen(1), torch.device("cpu"))
    c = stratified_coords(2, 64, 64, 32, _gen(2), torch.device("cpu"))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert not torch.equal(a[0][0], a[0][1])


def test_stratified_rejects_indivisible_crop() -> None:
    with pytest.raises(ValueError, match="masking cell"):
        stratified_coords(1, 48, 64, 32, _gen(), torch.device("cpu"))


def _unique_image(n: int = 2, c: int = 3, h: int = 64, w: int = 64) -> torch.Tensor:
    """Every pixel gets a distinct value so a copied value reveals where it came from."""
    base = torch.arange(n * h * w, dtype=torch.float64).view(n, 1, h, w)
    return base.expand(n, c, h, w).clone()


def test_copy_takes_a_neighbour_never_the_centre() -> None:
    x = _unique_image()
    n, _, h, w = x.shape
    for seed in range(20):
        g = _gen(seed)
        ys, xs = stratified_coords(n, h, w, 32, g, x.device)
        # include corner pixels, where clamping matters
        ys[:, 0], xs[:, 0] = 0, 0
        ys[:, -1], xs[:, -1] = h - 1, w - 1
        out = mask_pixels(x, ys, xs, "copy", g)
        for i in range(n):
            for y, xx in zip(ys[i].tolist(), xs[i].tolist(), strict=True):
                src = int(out[i, 0, y, xx].item()) - i * h * w
                sy, sx = divmod(src, w)
                assert (sy, sx) != (y, xx)
                assert abs(sy - y) <= 2 and abs(sx - xx) <= 2
                assert torch.all(out[i, :, y, xx] == out[i, 0, y, xx])  # whole pixel copied
        changed = (out != x).any(dim=1)
        mask = torch.zeros_like(changed)
        mask[torch.arange(n)[:, None], ys, xs] = True
        assert not (changed & ~mask).any()  # nothing outside the masked pixels changes


def test_random_replaces_with_uniform_colours() -> None:
    x = torch.full((4, 3, 256, 256), 7.0)
    g = _gen(3)
    ys, xs = stratified_coords(4, 256, 256, 32, g, x.device)
    out = mask_pixels(x, ys, xs, "random", g)
    vals = out[torch.arange(4)[:, None], :, ys, xs]
    assert vals.shape == (4, 64, 3)
    assert ((vals >= 0) & (vals < 1)).all()
    assert abs(vals.mean().item() - 0.5) < 0.05
    assert (out == 7.0).sum() == out.numel() - vals.numel()


def test_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="copy"):
        mask_pixels(
            torch.zeros(1, 3, 32, 32), torch.zeros(1, 1).long(), torch.zeros(1, 1).long(), "swap", _gen()
        )


def test_gather_pixels() -> None:
    m = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)
    ys = torch.tensor([[0, 3], [1, 2]])
    xs = torch.tensor([[1, 3], [0, 2]])
    assert gather_pixels(m, ys, xs).tolist() == [[1.0, 15.0], [20.0, 26.0]]


@pytest.mark.parametrize("strategy", ["copy", "random"])
@pytest.mark.parametrize("cell", [2, 4, 32])
def test_masked_input_never_reveals_a_target(strategy: str, cell: int) -> None:
    """The masked input depends on the unmasked pixels only: rewriting every masked pixel's value (its training
    target) leaves it unchanged, also when masked pixels are neighbours (dense masks, COPY)."""
    x = torch.rand(3, 3, 64, 64, generator=_gen(5))
    for seed in range(5):
        ys, xs = stratified_coords(3, 64, 64, cell, _gen(seed), x.device)
        other = x.clone()
        batch = torch.arange(3)[:, None].expand_as(ys)
        other[batch, :, ys, xs] = torch.rand(other[batch, :, ys, xs].shape, generator=_gen(seed + 100)) + 5.0
        a, b = mask_pixels(x, ys, xs, strategy, _gen(seed)), mask_pixels(other, ys, xs, strategy, _gen(seed))
        assert torch.equal(a, b)
        assert (a < 1).all()  # no target value (all >= 5 in `other`) anywhere in the input


def test_copy_refuses_a_mask_without_unmasked_neighbours() -> None:
    ys, xs = stratified_coords(1, 8, 8, 1, _gen(), torch.device("cpu"))
    with pytest.raises(ValueError, match="mask_cell"):
        mask_pixels(torch.zeros(1, 3, 8, 8), ys, xs, "copy", _gen())


def _blocky(n: int, generator: torch.Generator) -> torch.Tensor:
    """Piecewise-constant 32² colour images: one random colour per 8×8 block."""
    return torch.rand(n, 3, 4, 4, generator=generator).repeat_interleave(8, 2).repeat_interleave(8, 3)


@pytest.mark.parametrize("strategy", ["copy", "random"])
def test_masking_learns_to_denoise_blocky_images(strategy: str) -> None:
    """A method trained only through its masked pixels (σ = 76.5, 8-bit units) must learn within 200 small steps
    what the neighbours say about a pixel: a broken selection, replacement or loss gather (e.g. the loss on
    unmasked pixels) learns the identity instead and gains nothing over the noisy input."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: one thread is fastest, and immune to a busy machine's other load
    try:
        gain_db = _train_blocky(strategy)
    finally:
        torch.set_num_threads(threads)
    assert gain_db > 6.0


def _train_blocky(strategy: str) -> float:
    """Train a 3-layer CNN for 200 steps of 8 blocky 32² crops; the PSNR gain (dB) over the noisy input."""
    torch.manual_seed(0)
    noise = build_noise("gaussian", 76.5)
    method = build_method(
        MethodConfig(
            name="n2v", blindspot=False, objective=Objective.mean, masking=Masking(strategy), mask_cell=4
        ),
        noise,
        3,
        "known",
    )
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 3, 3, padding=1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = _gen(1)
    for step in range(200):
        clean = _blocky(8, g)
        params = noise.sample_params(8, g)
        noisy = noise.corrupt(clean, params, g)
        loss, _ = method.training_loss(net, noise, StepBatch(clean, noisy, params, g, step / 200))
        opt.zero_grad()
        loss.backward()
        opt.step()
    clean = _blocky(16, _gen(2))
    noisy = noise.corrupt(clean, noise.sample_params(16, _gen(2)), _gen(3))
    with torch.no_grad():
        out = method.denoise(net, noise, noisy, noise.sample_params(16, _gen(2)))["out"]
    return float(10 * torch.log10((noisy - clean).square().mean() / (out - clean).square().mean()))


@pytest.mark.parametrize("strategy", ["copy", "random"])
def test_training_and_noisy_validation_share_one_masked_loss(strategy: str) -> None:
    """``Method.pixel_losses`` masks, scores and gathers once: the training loss is the mean of exactly the
    values the held-out noisy validation averages per image (same mask, no regulariser at the end of training)."""
    noise = build_noise("gaussian", 25)
    config = MethodConfig(name="n2v", blindspot=False, objective=Objective.mean, masking=Masking(strategy))
    method = build_method(config, noise, 3, "known")
    noisy = torch.rand((2, 3, 64, 64), generator=_gen(3))
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    losses = method.pixel_losses(net, noise, noisy, noisy, None, _gen(7), regularise=False, progress=1.0)
    assert losses.shape == (2, 4)  # one masked pixel per 32² cell
    ys, xs = stratified_coords(2, 64, 64, 32, _gen(7), noisy.device)
    gen = _gen(7)
    stratified_coords(2, 64, 64, 32, gen, noisy.device)  # the same draws, in the same order
    out = net(mask_pixels(noisy, ys, xs, strategy, gen))
    expected = gather_pixels((out - noisy).square().mean(1), ys, xs)
    assert torch.equal(losses, expected)
    params = noise.sample_params(2, _gen(1))
    loss, _ = method.training_loss(net, noise, StepBatch(None, noisy, params, _gen(7), 1.0))
    assert torch.equal(loss, expected.mean())
