"""ssdn.eval.protocol: documented noise order, padding modes, determinism."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ssdn.data.testsets import TestImage, load_testset
from ssdn.eval.protocol import (
    NoiseSpec,
    ProtocolConfig,
    default_repeats,
    generate,
    prepare_set,
    protocol_configs,
)
from ssdn.noise import build_noise


def _images(*shapes: tuple[int, int], seed: int = 0) -> list[TestImage]:
    rng = np.random.default_rng(seed)
    return [
        TestImage(f"im{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for i, (h, w) in enumerate(shapes)
    ]


def _reflect(x: torch.Tensor, size: int) -> torch.Tensor:
    """Reference padding: numpy's 'reflect' (mirror without edge repeat), bottom/right, (C, H, W)."""
    _, h, w = x.shape
    return torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, size - h), (0, size - w)), mode="reflect"))


def _clean(im: TestImage) -> torch.Tensor:
    return torch.from_numpy(im.pixels).permute(2, 0, 1).float() / 255


def _cfg(noise: NoiseSpec, **kw) -> ProtocolConfig:
    base = {"set_name": "toy", "noise": noise, "repeats": 3, "seed": 7, "multiple": 8}
    return ProtocolConfig(**(base | kw))


@pytest.mark.parametrize("pad_mode", ["authors", "per_image"])
def test_noise_follows_the_documented_order(pad_mode: str) -> None:
    images = _images((20, 30), (24, 16))
    spec = NoiseSpec("gaussian", (5.0, 50.0))
    items = list(generate(prepare_set(_cfg(spec, pad_mode=pad_mode), images)))
    assert [(it.index, it.rep, it.image, it.name) for it in items] == [
        (r * 2 + i, r, i, f"im{i}.png") for r in range(3) for i in range(2)
    ]

    # the same draws by hand: one generator, per pass and image: params, then the noise
    g = torch.Generator().manual_seed(7)
    noise = build_noise("gaussian", [5, 50])
    sizes = [32, 32] if pad_mode == "authors" else [32, 24]
    for it in items:
        clean, size = _clean(images[it.image]), sizes[it.image]
        params = noise.sample_params(1, generator=g)
        if pad_mode == "authors":
            ref = noise.corrupt(_reflect(clean, size)[None], params, generator=g)[0]
        else:
            ref = _reflect(noise.corrupt(clean[None], params, generator=g)[0], size)
        assert it.param == params.item() and 5 <= it.param <= 50
        assert it.noisy.dtype == torch.float32 and it.noisy.shape == (3, size, size)
        assert torch.equal(it.noisy, ref)
        assert torch.equal(it.clean, clean)
        assert torch.equal(it.noisy_unpadded(), it.noisy[:, : clean.shape[1], : clean.shape[2]])
    # every pass draws new parameters and new noise
    assert items[0].param != items[2].param
    assert not torch.equal(items[0].noisy, items[2].noisy)
    # and a second run is identical
    again = list(generate(prepare_set(_cfg(spec, pad_mode=pad_mode), images)))
    assert all(
        torch.equal(a.noisy, b.noisy) and a.param == b.param for a, b in zip(items, again, strict=True)
    )


def test_padding_modes_hand_built() -> None:
    """σ = 0 exposes the padding: ``authors`` pads the clean image to one size per set, ``per_image`` each to
    its own; values are numpy's reflect, bottom/right only."""
    images = _images((3, 5), (4, 2))
    zero = NoiseSpec("gaussian", 0.0)
    a = list(generate(prepare_set(_cfg(zero, repeats=1, multiple=4), images)))
    assert [it.size for it in a] == [8, 8]
    p = list(generate(prepare_set(_cfg(zero, repeats=1, multiple=4, pad_mode="per_image"), images)))
    assert [it.size for it in p] == [8, 4]
    for it, size in [(a[0], 8), (a[1], 8), (p[0], 8), (p[1], 4)]:
        assert torch.equal(it.noisy, _reflect(_clean(images[it.image]), size))
    # first row of image 0 (W = 5) padded to 8: x0 x1 x2 x3 x4 | x3 x2 x1
    row = _clean(images[0])[0, 0]
    assert torch.equal(a[0].noisy[0, 0], torch.cat([row, row[[3, 2, 1]]]))


def test_face_sized_pad_larger_than_the_image() -> None:
    """SET14's face.png (276²) in a set padded to 768²: a 492-pixel pad, i.e. repeated reflection."""
    big = TestImage("monarch-like.png", np.zeros((512, 768, 3), dtype=np.uint8))
    face = _images((276, 276), seed=3)[0]
    cfg = ProtocolConfig("toy", NoiseSpec("gaussian", 0.0), repeats=1)
    items = list(generate(prepare_set(cfg, [big, face])))
    assert items[1].size == 768
    assert torch.equal(items[1].noisy, _reflect(_clean(face), 768))


def test_real_set_padded_sizes(data_root: Path) -> None:
    spec = NoiseSpec("gaussian", 25.0)
    kodak = prepare_set(ProtocolConfig("kodak", spec, repeats=10), root=data_root)
    assert set(kodak.sizes) == {768} and len(kodak) == 240
    set14 = prepare_set(ProtocolConfig("set14", spec, repeats=20), root=data_root)
    assert set(set14.sizes) == {768} and len(set14) == 280
    per_image = prepare_set(ProtocolConfig("set14", spec, repeats=20, pad_mode="per_image"), root=data_root)
    assert dict(zip(per_image.names, per_image.sizes, strict=True))["face.png"] == 288
    assert [default_repeats(n) for n in ("kodak", "bsd300", "set14", "set14_12", "mine")] == [
        10,
        3,
        20,
        20,
        1,
    ]


def test_limit_and_centre_crop(data_root: Path) -> None:
    prepared = prepare_set(
        ProtocolConfig("bsd300", NoiseSpec("gaussian", 25.0), repeats=3, limit=2, crop=64), root=data_root
    )
    full = load_testset("bsd300", root=data_root, limit=2)
    assert prepared.names == [im.name for im in full] and prepared.sizes == [64, 64]
    h, w = full[0].pixels.shape[:2]
    top, left = (h - 64) // 2, (w - 64) // 2
    ref = torch.from_numpy(full[0].pixels[top : top + 64, left : left + 64]).permute(2, 0, 1).float() / 255
    assert torch.equal(prepared.clean[0], ref)


@pytest.mark.parametrize(
    ("name", "value", "pad_mode", "digest"),
    [
        ("gaussian", 25.0, "authors", "87ba70fe943c182e54784fd369f2493dee47fcff6e57987f35ffbf40f2211832"),
        ("gaussian", 25.0, "per_image", "fa7ec3630e653a725b85f61d8557e874842e3469d6755a3fc2558029bfdc0914"),
        (
            "gaussian",
            (5.0, 50.0),
            "authors",
            "3c2b47cb6f2718b759b0aa92048f95222110a2625d9aca47d7b5454ff3dbab4e",
        ),
        (
            "poisson",
            (5.0, 50.0),
            "per_image",
            "eeb8d0c8644f6271ef8772c715930201efe9dbd74d87afefa8c197d7f233d126",
        ),
    ],
)
def test_single_parameter_noisy_inputs_are_those_of_before(
    data_root: Path, name: str, value: float | tuple[float, float], pad_mode: str, digest: str
) -> None:
    """The authors' protocol must not move: SHA-256 of the noisy images and float64 params of the first KODAK
    image, two passes at seed 0, equal those the protocol gave before it carried several parameters (values
    computed with commit 987a78f, where ``NoisyItem.param`` was ``float(params[0])``)."""
    cfg = ProtocolConfig("kodak", NoiseSpec(name, value), repeats=2, seed=0, limit=1, pad_mode=pad_mode)
    h = hashlib.sha256()
    for it in generate(prepare_set(cfg, root=data_root)):
        assert it.params.shape == () and it.params.dtype == torch.float64 and it.param == it.params.item()
        h.update(it.noisy.numpy().tobytes())
        h.update(np.float64(it.param).tobytes())
    assert h.hexdigest() == digest


@pytest.mark.parametrize("pad_mode", ["authors", "per_image"])
def test_poisson_gaussian_carries_both_parameters(pad_mode: str) -> None:
    images = _images((20, 30), (24, 16))
    value = OmegaConf.create({"a": 0.01, "b": [1e-4, 4e-4]})  # as a run config holds it
    (cfg,) = protocol_configs(
        {"sets": "toy", "repeats": 2, "seed": 7, "pad_mode": pad_mode}, ("poisson_gaussian", value), 3
    )
    spec = cfg.noise
    assert spec == NoiseSpec("poisson_gaussian", {"a": 0.01, "b": (1e-4, 4e-4)})
    assert spec.label() == "poisson_gaussian_a0.01_b0.0001_0.0004" and hash(spec) == hash(
        NoiseSpec.of(spec.build())
    )
    assert NoiseSpec.of(spec.build()) == spec
    items = list(generate(prepare_set(replace(cfg, multiple=8), images)))
    g = torch.Generator().manual_seed(7)
    noise = build_noise("poisson_gaussian", {"a": 0.01, "b": [1e-4, 4e-4]})
    sizes = [32, 32] if pad_mode == "authors" else [32, 24]
    for it in items:  # the documented order, with (1, 2) params
        clean, size = _clean(images[it.image]), sizes[it.image]
        params = noise.sample_params(1, generator=g)
        if pad_mode == "authors":
            ref = noise.corrupt(_reflect(clean, size)[None], params, generator=g)[0]
        else:
            ref = _reflect(noise.corrupt(clean[None], params, generator=g)[0], size)
        assert torch.equal(it.noisy, ref)
        assert torch.equal(it.params, params[0]) and it.params.shape == (2,)
        a, b = params[0].tolist()
        assert it.param == {"a": a, "b": b} and a == 0.01 and 1e-4 <= b <= 4e-4
    assert items[0].param != items[2].param  # b is drawn per image


def test_config_and_noise_spec() -> None:
    with pytest.raises(ValueError, match="pad_mode"):
        ProtocolConfig("kodak", NoiseSpec("gaussian", 25.0), repeats=1, pad_mode="official")
    with pytest.raises(ValueError, match="repeats"):
        ProtocolConfig("kodak", NoiseSpec("gaussian", 25.0), repeats=0)
    assert NoiseSpec.of(("gaussian", 25)) == NoiseSpec("gaussian", 25.0)
    assert NoiseSpec.of(["poisson", [5, 50]]) == NoiseSpec("poisson", (5.0, 50.0))
    assert NoiseSpec.of(build_noise("impulse", [0, 1])) == NoiseSpec("impulse", (0.0, 1.0))
    assert NoiseSpec.of(build_noise("gaussian", [25, 25])).label() == "gaussian25"
    assert NoiseSpec("impulse", 0.5).build().variable is False
    assert NoiseSpec("gaussian", [25, 25]) == NoiseSpec("gaussian", 25.0)  # ranges of one value are values
    pg = NoiseSpec("poisson_gaussian", {"a": [0.01, 0.01], "b": [0, 4e-4]})
    assert pg.value == {"a": 0.01, "b": (0.0, 4e-4)} and pg.label() == "poisson_gaussian_a0.01_b0_0.0004"
    assert NoiseSpec.of(pg.build()) == pg and len({pg, NoiseSpec.of(pg.build())}) == 1


def test_protocol_configs_from_the_eval_section() -> None:
    """The run config's ``eval`` section (an OmegaConf node, noise range a ListConfig) gives one config per set."""
    cfg = OmegaConf.create(
        {
            "eval": {"sets": ["kodak", "set14"], "repeats": None, "seed": 3, "pad_mode": "per_image"},
            "eval_limited": {
                "sets": "bsd300",
                "repeats": {"bsd300": 2},
                "limit": 1,
                "crop": 64,
                "batch_size": 8,
            },
            "noise": {"name": "poisson", "value": [5, 50]},
        }
    )
    kodak, set14 = protocol_configs(cfg.eval, (cfg.noise.name, cfg.noise.value), 1)
    spec = NoiseSpec("poisson", (5.0, 50.0))
    assert kodak == ProtocolConfig("kodak", spec, 10, seed=3, pad_mode="per_image", channels=1)
    assert set14 == ProtocolConfig("set14", spec, 20, seed=3, pad_mode="per_image", channels=1)
    (bsd,) = protocol_configs(cfg.eval_limited, ("gaussian", 25), 3)
    assert bsd == ProtocolConfig("bsd300", NoiseSpec("gaussian", 25.0), 2, limit=1, crop=64)
    assert protocol_configs({"sets": ["toy"], "repeats": 4}, ("gaussian", 25), 3)[0].repeats == 4
    with pytest.raises(ValueError, match=r"eval\.sets is missing"):
        protocol_configs({"repeats": 2}, ("gaussian", 25), 3)
