"""Reading checkpoints a user hands us, without running code hidden in them.

A ``.ckpt`` is a pickle, and unpickling an untrusted file may execute anything it names. Every checkpoint ssdn
reads (``resume=``, ``resume=auto``, ``denoise``, ``evaluate``, ``report``) goes through :func:`read_checkpoint`,
which loads with ``weights_only=True``: tensors, containers and plain values only. ssdn's checkpoints hold
nothing else (configs are stored as plain dicts with enums as strings), so a file that needs more is refused
with its path rather than trusted.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ssdn.errors import UserError

if TYPE_CHECKING:
    from ssdn.training.module import DenoiserModule

__all__ = ["CheckpointError", "load_denoiser", "read_checkpoint"]


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, damaged, not ssdn's, or holds objects other than weights."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's dict, loaded weights-only: a payload in the file is refused, never executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; give the path of a .ckpt written by ssdn-train")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a damaged pickle fails in many ways (EOF, zip, index, key errors)
        if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc):
            raise CheckpointError(
                f"{path}: refused to load, it holds objects other than weights (code would run if it were "
                "unpickled); use a checkpoint written by ssdn-train from a source you trust"
            ) from exc
        raise CheckpointError(
            f"{path}: truncated or not a checkpoint ({_first_line(exc)}); re-copy it, or resume from another"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: holds a {type(state).__name__}, not a checkpoint dict written by ssdn-train"
        )
    return state


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


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
