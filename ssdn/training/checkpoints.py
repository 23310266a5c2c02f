"""Reading checkpoints a user hands us, without running code hidden in them.

A ``.ckpt`` is a pickle, and unpickling an untrusted file may execute anything it names. Every checkpoint ssdn
reads (``resume=``, ``resume=auto``, ``denoise``, ``export``, ``evaluate``, ``report``) goes through
:func:`read_checkpoint`, which loads with ``weights_only=True``: tensors, containers and plain values only.
ssdn's checkpoints hold nothing else (configs are stored as plain dicts with enums as strings), so a file that
needs more is refused with its path rather than trusted. What is not a checkpoint at all (a folder, a pipe, a
text file) is named as such before torch reads it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ssdn.data.intensity import Intensity
from ssdn.errors import UserError

if TYPE_CHECKING:
    from ssdn.training.module import DenoiserModule

__all__ = [
    "CheckpointError",
    "load_denoiser",
    "read_checkpoint",
    "training_bit_depth",
    "training_intensity",
    "training_noise",
]


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, damaged, not ssdn's, or holds objects other than weights."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's dict, loaded weights-only: a payload in the file is refused, never executed."""
    path = _checkpoint_file(Path(path))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a damaged pickle fails in many ways (EOF, zip, index, key errors)
        if _refused_for_safety(exc):
            raise CheckpointError(
                f"{path}: refused to load: it holds objects other than weights, which could run code when "
                "unpickled, so it was refused for safety; use a checkpoint written by ssdn-train from a source "
                "you trust"
            ) from exc
        raise CheckpointError(
            f"{path}: truncated or not a checkpoint ({_first_line(exc)}); re-copy it, or use another"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: holds a {type(state).__name__}, not a checkpoint dict written by ssdn-train"
        )
    return state


# What ``torch.save`` files start with: a zip archive (since torch 1.6) or a bare pickle (protocol >= 2).
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


def _checkpoint_file(path: Path) -> Path:
    """``path`` when it is a file that could be a checkpoint; otherwise an error saying what it is instead."""
    if path.is_dir():
        inside = [p for p in (path / "checkpoints" / "last.ckpt", path / "last.ckpt") if p.is_file()]
        inside = inside or sorted(path.glob("*.ckpt"))[:1] or sorted(path.glob("checkpoints/*.ckpt"))[:1]
        hint = f"pass {inside[0]}" if inside else "pass the .ckpt file inside a run's checkpoints/ folder"
        raise CheckpointError(f"{path} is a folder, not a checkpoint; {hint}")
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}; give the path of a .ckpt written by ssdn-train")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file (a pipe or device); give a .ckpt file")
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"{path}: empty, not a checkpoint; re-copy it, or use another")
    if not head.startswith(_CHECKPOINT_MAGIC):
        raise CheckpointError(
            f"{path}: not a checkpoint (torch.save writes a zip archive; this file starts with {head!r}); "
            "give a .ckpt written by ssdn-train"
        )
    return path


def _refused_for_safety(exc: BaseException) -> bool:
    """Whether torch's weights-only unpickler refused an object it does not allow (a global, a reduce), as
    opposed to a file cut short: torch words both as UnpicklingError, the first naming what it refused."""
    if not isinstance(exc, pickle.UnpicklingError):
        return False
    return any(word in str(exc) for word in _REFUSALS)


# Words of torch's weights-only refusals (torch/_weights_only_unpickler.py): a global it does not allow, an
# object it will not build, a pickle opcode it does not run.
_REFUSALS = ("GLOBAL", "Can only", "Unsupported operand")


def _first_line(exc: BaseException) -> str:
    """The first line of an error, with torch's advice to disable the weights-only safeguard left out."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return type(exc).__name__ if "weights_only" in line else line


def training_bit_depth(state: dict[str, Any]) -> int | None:
    """The bit depth training scaled its pixels by (``ssdn_pixel_scale`` of the checkpoint), if recorded."""
    scale = state.get("ssdn_pixel_scale")
    return int(scale["bit_depth"]) if scale else None


def training_intensity(state: dict[str, Any]) -> Intensity | None:
    """The scale training set with ``data.offset`` / ``data.peak`` (``ssdn.data.intensity``), or None where it
    scaled by the bit depth (each input is then scaled by its own depth, as before those settings existed)."""
    scale = state.get("ssdn_pixel_scale")
    if not scale:
        return None
    depth = int(scale["bit_depth"])
    intensity = Intensity.from_record(scale, depth)
    return None if intensity == Intensity.of_depth(depth) else intensity


def training_noise(state: dict[str, Any]) -> dict[str, float] | None:
    """The training images' noise as measured before a noisy-only run (``ssdn.training.noise_check``), if
    recorded: sigma, rho_01, rho_10, extent, channel_correlation."""
    noise = state.get("ssdn_training_noise")
    return {str(k): float(v) for k, v in noise.items()} if isinstance(noise, dict) else None


def load_denoiser(checkpoint: str | Path, device: str | torch.device = "cpu") -> DenoiserModule:
    """Rebuild a trained module (network, noise model, method) from its checkpoint, in eval mode."""
    from ssdn.training.module import (
        DenoiserModule,  # Lightning and the nets load only for a model, not to read a file
    )

    state = read_checkpoint(checkpoint, map_location=torch.device(device))
    config = (state.get("hyper_parameters") or {}).get("config")
    if not isinstance(config, dict) or "state_dict" not in state:
        raise CheckpointError(
            f"{checkpoint}: not an ssdn checkpoint (no config or weights); give one from ssdn-train"
        )
    module = DenoiserModule(config)
    module.on_load_checkpoint(state)
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{checkpoint}: its weights do not fit its own config ({_first_line(exc)})"
        ) from exc
    return module.to(torch.device(device)).eval()
