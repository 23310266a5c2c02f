"""The paper's test protocol: replicated test sets, seeded noise, test-time padding.

Replication (paper App. A): the sorted image list is repeated ``repeats`` times (KODAK 10, BSD300 3, SET14
20); every pass draws new noise and, for variable noise, new per-image parameters. One seeded CPU generator
per set, consumed in a fixed order (`generate`), is why every method, batch size and machine sees identical
noisy inputs. ``pad_mode``: ``authors`` (default, the official code) mirror-pads each *clean* image to one
square per set and draws the noise on the padded image; ``per_image`` (Neighbor2Neighbor / Blind2Unblind)
draws it on the unpadded image and pads the *noisy* one to its own size. Classical methods get the network's
input cropped back to H×W; outputs are cropped to H×W before scoring.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssdn.data.testsets import TestImage, get_testset, load_testset
from ssdn.nets.padding import common_padded_size, mirror_pad, padded_size
from ssdn.nets.unet import SIDE_MULTIPLE
from ssdn.noise import NoiseModel, build_noise

PAD_MODES = ("authors", "per_image")


Entry = float | tuple[float, float]
"""One parameter in a ``NoiseSpec``: a fixed value or a ``(low, high)`` range drawn per image."""


def _entry(value: object) -> Entry:
    """A number, or a pair (a config's list too) -> a float, or a range unless both ends are equal."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        low, high = (float(v) for v in value)
        return low if low == high else (low, high)
    return float(value)  # type: ignore[arg-type]


def _plain(entry: Entry) -> float | list[float]:
    return list(entry) if isinstance(entry, tuple) else entry


@dataclass(frozen=True)
class NoiseSpec:
    """A noise model by config: ``build_noise(name, value)``. ``value`` is a number or a ``(low, high)`` range, or
    for a model with several parameters (Poisson–Gaussian) a mapping ``{name: number or (low, high)}``."""

    name: str
    value: Entry | Mapping[str, Entry]

    def __post_init__(self) -> None:
        """Numbers as floats and ranges as tuples (a config's lists too), so equal specs compare equal."""
        value = self.value
        plain = {str(k): _entry(v) for k, v in value.items()} if isinstance(value, Mapping) else _entry(value)
        object.__setattr__(self, "value", plain)

    def __hash__(self) -> int:  # a mapping value is not hashable; the label names the spec exactly
        return hash((self.name, self.label()))

    @classmethod
    def of(cls, noise: NoiseSpec | NoiseModel | Sequence) -> NoiseSpec:
        """Accept a spec, a built ``NoiseModel`` or a ``(name, value)`` pair (value a number, a range, which may be
        a config's list, or a mapping of them per parameter)."""
        if isinstance(noise, NoiseSpec):
            return noise
        if isinstance(noise, NoiseModel):
            pairs = zip(noise.low.reshape(-1).tolist(), noise.high.reshape(-1).tolist(), strict=True)
            entries = [_entry(pair) for pair in pairs]
            if noise.num_params == 1:
                return cls(noise.name, entries[0])
            return cls(noise.name, dict(zip(noise.param_names, entries, strict=True)))
        name, value = noise
        return cls(str(name), value)

    def build(self) -> NoiseModel:
        if isinstance(self.value, Mapping):
            return build_noise(self.name, {k: _plain(v) for k, v in self.value.items()})
        return build_noise(self.name, _plain(self.value))

    def label(self) -> str:
        """E.g. ``gaussian25``, ``gaussian5_50`` (the config naming of the authors) or
        ``poisson_gaussian_a0.01_b0.0001_0.0004``."""

        def values(entry: Entry) -> str:
            return "_".join(f"{v:g}" for v in (entry if isinstance(entry, tuple) else (entry,)))

        if isinstance(self.value, Mapping):
            return self.name + "".join(f"_{k}{values(v)}" for k, v in self.value.items())
        return self.name + values(self.value)


@dataclass(frozen=True)
class ProtocolConfig:
    """Everything that determines the noisy inputs of one set. ``limit``/``crop`` shrink the set for tests."""

    set_name: str
    noise: NoiseSpec
    repeats: int
    seed: int = 0
    pad_mode: str = "authors"
    channels: int = 3
    limit: int | None = None
    crop: int | None = None
    multiple: int = SIDE_MULTIPLE

    def __post_init__(self) -> None:
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.crop is not None and self.crop < 1:
            raise ValueError(f"crop must be a positive size, got {self.crop}")


def default_repeats(set_name: str) -> int:
    """The paper's replication factor for a registered set (1 for an unregistered one)."""
    try:
        return get_testset(set_name).repeats
    except KeyError:
        return 1


def protocol_configs(
    settings: Mapping[str, Any], noise: NoiseSpec | NoiseModel | Sequence, channels: int
) -> list[ProtocolConfig]:
    """One ``ProtocolConfig`` per set of the run config's ``eval`` section (or the same keys from a command line).

    Reads ``sets`` (a name or a list) and, optionally, ``repeats`` (None: the paper's factor per set; a number
    for all sets; or a per-set mapping), ``seed``, ``pad_mode``, ``limit`` and ``crop``. The other ``eval``
    settings (batch size, data root) cannot change a noisy input, so they are the caller's to pass on.
    """
    if "sets" not in settings:
        raise ValueError(
            "eval.sets is missing: name the test sets to evaluate on, e.g. [kodak, bsd300, set14]"
        )
    sets = settings["sets"]
    names = [sets] if isinstance(sets, str) else [str(s) for s in sets]
    repeats = settings.get("repeats")
    spec = NoiseSpec.of(noise)

    def count(name: str) -> int:
        if isinstance(repeats, Mapping):
            return int(repeats.get(name, default_repeats(name)))
        return default_repeats(name) if repeats is None else int(repeats)

    def optional(key: str) -> int | None:
        value = settings.get(key)
        return None if value is None else int(value)

    return [
        ProtocolConfig(
            name,
            spec,
            count(name),
            seed=int(settings.get("seed", 0)),
            pad_mode=str(settings.get("pad_mode", "authors")),
            channels=int(channels),
            limit=optional("limit"),
            crop=optional("crop"),
        )
        for name in names
    ]


@dataclass
class NoisyItem:
    """One entry of the replicated list: ``noisy`` is the network input (C, S, S); ``clean`` is (C, H, W).

    ``params``: the image's noise parameters, () or (P,) float64 in the paper's units, as the denoiser gets them;
    ``param``: the same for result rows, a number for one parameter, ``{name: value}`` for several."""

    index: int
    rep: int
    image: int
    name: str
    clean: Tensor
    noisy: Tensor
    params: Tensor
    param: float | dict[str, float]

    @property
    def height(self) -> int:
        return self.clean.shape[1]

    @property
    def width(self) -> int:
        return self.clean.shape[2]

    @property
    def size(self) -> int:
        return self.noisy.shape[-1]

    def noisy_unpadded(self) -> Tensor:
        """What a classical method denoises: the noisy image cropped to H×W."""
        return self.noisy[:, : self.height, : self.width]


@dataclass
class PreparedSet:
    """Clean images of one set as float32 (C, H, W) in [0, 1], with each image's padded square side."""

    config: ProtocolConfig
    names: list[str]
    clean: list[Tensor]
    sha256: list[str | None] = field(default_factory=list)  # of each image's file, when verified
    sizes: list[int] = field(init=False)

    def __post_init__(self) -> None:
        hw = [(c.shape[1], c.shape[2]) for c in self.clean]
        if self.config.pad_mode == "authors":
            common = common_padded_size(hw, multiple=self.config.multiple)
            self.sizes = [common] * len(hw)
        else:
            self.sizes = [padded_size(h, w, multiple=self.config.multiple) for h, w in hw]

    def __len__(self) -> int:
        return len(self.clean) * self.config.repeats


def _to_tensor(pixels: np.ndarray, crop: int | None) -> Tensor:
    if crop is not None:
        h, w = pixels.shape[:2]
        top, left = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
        pixels = pixels[top : top + crop, left : left + crop]
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous().float().div(255.0)


def prepare_set(
    config: ProtocolConfig,
    images: Sequence[TestImage] | None = None,
    root: str | Path | None = None,
    allow_modified: bool = False,
) -> PreparedSet:
    """Load (or take) the clean images, apply ``limit`` and the centre ``crop``, and fix the padded sizes.
    Loaded sets are verified against the registry's checksums first (``allow_modified``: warn instead)."""
    if images is None:
        images = load_testset(
            config.set_name,
            root=root,
            channels=config.channels,
            limit=config.limit,
            allow_modified=allow_modified,
        )
    else:
        images = list(images)[: config.limit]
    if not images:
        raise ValueError(f"test set {config.set_name!r} has no images")
    return PreparedSet(
        config,
        [im.name for im in images],
        [_to_tensor(im.pixels, config.crop) for im in images],
        [im.sha256 for im in images],
    )


def _pad(x: Tensor, size: int) -> Tensor:
    return mirror_pad(x.unsqueeze(0), size - x.shape[1], size - x.shape[2])[0]


def generate(prepared: PreparedSet) -> Iterator[NoisyItem]:
    """The replicated noisy list, drawn in the documented order from one seeded CPU generator.

    One CPU ``torch.Generator`` seeded with ``seed`` per set, consumed in this order, float32 on CPU::

        for r in range(repeats):
            for i, image in enumerate(sorted images):
                params = noise.sample_params(1, g)            # a fixed parameter draws nothing
                noisy  = noise.corrupt(source_i, params, g)   # source_i: clean padded (authors) or unpadded (per_image)

    In ``authors`` mode each clean image is mirror-padded bottom/right to the set's ``common_padded_size``, so
    the H×W crop that classical methods get holds the same noise values the network sees at those pixels.
    """
    cfg = prepared.config
    noise = cfg.noise.build()
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    n = len(prepared.clean)
    for rep in range(cfg.repeats):
        for i, (name, clean, size) in enumerate(
            zip(prepared.names, prepared.clean, prepared.sizes, strict=True)
        ):
            params = noise.sample_params(1, generator=g)
            if cfg.pad_mode == "authors":
                noisy = noise.corrupt(_pad(clean, size).unsqueeze(0), params, generator=g)[0]
            else:
                noisy = _pad(noise.corrupt(clean.unsqueeze(0), params, generator=g)[0], size)
            yield NoisyItem(rep * n + i, rep, i, name, clean, noisy, params[0], _record(noise, params[0]))


def _record(noise: NoiseModel, params: Tensor) -> float | dict[str, float]:
    """One image's params for the result rows: a number for a one-parameter model (as results files always
    held), ``{name: value}`` for several."""
    values = {k: float(v) for k, v in noise.params_dict(params).items()}
    return values[noise.param_name] if noise.num_params == 1 else values
