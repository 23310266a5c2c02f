"""What an evaluation yields: per-item scores, per-set means and the run's summary (``results.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

NOISY_KEY = "noisy"
"""Score key of the noisy input itself, beside the denoiser's output keys."""

UNCERTAINTY_KEY = "posterior_std"
"""Output key of the per-pixel posterior std (``denoise(..., uncertainty=True)``): not an image, never scored."""


@dataclass
class ImageResult:
    """Scores of one item of the replicated list."""

    set: str
    index: int
    rep: int
    image: int
    name: str
    height: int
    width: int
    param: float | dict[str, float]
    """The image's noise parameter in the paper's units; ``{name: value}`` for a model with several."""
    psnr: dict[str, float]
    ssim: dict[str, float]


@dataclass
class SetResult:
    name: str
    count: int
    reported: str
    psnr: dict[str, float]
    ssim: dict[str, float]
    protocol: dict[str, Any]
    seconds: float
    rows: list[ImageResult] = field(repr=False)
    #: ``Calibration.result()`` of the posterior std when the evaluation was asked for it (``calibrate``).
    calibration: dict[str, Any] | None = None
    sha256: dict[str, str] = field(default_factory=dict)  # of each scored file, as verified before scoring


@dataclass
class Results:
    method: str
    noise: dict[str, Any]
    sets: dict[str, SetResult]
    meta: dict[str, Any]

    def summary(self) -> str:
        """A small text table: reported PSNR/SSIM and the noisy-input PSNR per set."""
        lines = [f"{self.method} on {self.noise['label']}"]
        for s in self.sets.values():
            lines.append(
                f"  {s.name:<10} n={s.count:<4} {s.reported} PSNR {s.psnr[s.reported]:.4f} dB"
                f"  SSIM {s.ssim[s.reported]:.4f}  (noisy {s.psnr[NOISY_KEY]:.2f} dB)"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-image rows go to the CSV)."""
        sets = {}
        for name, s in self.sets.items():
            d = asdict(s)
            d.pop("rows")
            sets[name] = d
        return {"method": self.method, "noise": self.noise, "meta": self.meta, "sets": sets}
