"""Plots (PNG): validation PSNR against images seen, the Figure 3 analogue and the learned noise levels.

matplotlib is imported inside the functions (Agg backend), so the report package imports without it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ssdn.report.paper import Paper
from ssdn.report.runs import RunRecord, config_value
from ssdn.utils import atomic_write

#: Training cost unit of Figure 3: 0.5M blind-spot minibatches of 4 images.
FIGURE3_UNIT_IMAGES = 2_000_000
#: Masking-based minibatches are about 4× cheaper than blind-spot ones (no rotated copies inside the net).
MASKING_COST = 0.25
LEVEL_LABELS = {"gaussian": "σ (8-bit units)", "poisson": "λ", "impulse": "α"}


def _figure(n: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return path


def plot_curves(runs: list[RunRecord], out: Path) -> list[Path]:
    """Validation PSNR against images seen, one plot per noise setting, one line per row."""
    by_noise: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.curve:
            by_noise.setdefault(run.noise, []).append(run)
    written = []
    for noise, group in sorted(by_noise.items()):
        fig, (ax,) = _figure()
        for run in group:
            x, y = zip(*run.curve, strict=True)
            ax.plot(x, y, marker="." if len(x) < 20 else None, label=run.name)
        ax.set(
            xlabel="training images seen", ylabel="validation PSNR (dB)", title=f"{noise}: validation PSNR"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, out / f"val_psnr-{noise}.png"))
    return written


def training_cost(run: RunRecord, images: float, unit: float = FIGURE3_UNIT_IMAGES) -> float:
    """Figure 3's x axis: blind-spot images / ``unit`` (the paper: 0.5M minibatches of 4); a masking minibatch
    counts 4× cheaper."""
    cost = images / unit
    return cost * MASKING_COST if config_value(run.config, "method.masking") else cost


def figure3_unit(runs: list[RunRecord]) -> float:
    """The images of cost 1: the paper's 2M, or the training length of the group's blind-spot run when that is
    shorter (a small-scale Figure 3 such as bench/masking.py's, where 1 = what the blind-spot run was given)."""
    lengths = [
        float(config_value(j.config, "train.images"))
        for j in runs
        if not config_value(j.config, "method.masking") and config_value(j.config, "train.images")
    ]
    return min([FIGURE3_UNIT_IMAGES, *lengths])


def plot_figure3(runs: list[RunRecord], paper: Paper, out: Path) -> Path | None:
    """The Figure 3 analogue: Kodak validation PSNR against training cost, masking vs the blind-spot net."""
    group = [
        j
        for j in runs
        if (j.experiment or "").startswith("figure3/") or config_value(j.config, "method.masking")
    ]
    group = [j for j in group if j.curve or "kodak" in j.psnr]
    if not group:
        return None
    unit = figure3_unit(group)
    fig, (ax,) = _figure()
    for run in group:
        line = None
        if run.curve:
            (line,) = ax.plot(
                [training_cost(run, x, unit) for x, _ in run.curve], [y for _, y in run.curve], label=run.name
            )
        if "kodak" in run.psnr and run.images_seen:
            protocol = ", ".join(run.off_protocol) if run.off_protocol else "full protocol"
            ax.plot(
                [training_cost(run, float(run.images_seen), unit)],
                [run.psnr["kodak"]],
                marker="o",
                ls="none",
                color=line.get_color() if line else None,
                label=f"{run.name}: KODAK ({protocol})",
            )
    ref = paper.cells.get(("figure3", "gauss25-blindspot-sigma_known-ema", "kodak"))
    if ref is not None:
        ax.axhline(ref, color="grey", ls="--", lw=1)
        ax.plot(
            [1.0],
            [ref],
            marker="*",
            color="black",
            ls="none",
            ms=10,
            label=f"paper: blind-spot, 0.5M minibatches ({ref:.2f} dB)",
        )
    scale = "0.5M" if unit == FIGURE3_UNIT_IMAGES else f"{unit / 4:,.0f}"
    ax.set(
        xlabel=f"training cost (1 = {scale} blind-spot or 4× as many masking minibatches of 4)",
        ylabel="KODAK PSNR (dB)",
        title="Figure 3: masking vs blind-spot (σ = 25 known, posterior mean)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "figure3.png")


def plot_noise_levels(runs: list[RunRecord], out: Path) -> Path | None:
    """Learned noise level (paper units: σ, λ, α) against the truth for the unknown-parameter rows.

    The log holds the batch mean of the estimates: for a fixed level it should approach the true value, for a
    range it should stay inside it (around the mean of the uniform draw)."""
    group = [j for j in runs if j.levels]
    if not group:
        return None
    fig, axes = _figure(len(group))
    for ax, run in zip(axes, group, strict=False):
        x, y = zip(*run.levels, strict=True)
        ax.plot(x, y, label="estimated (batch mean)")
        value = config_value(run.config, "noise.value")
        if isinstance(value, list):
            ax.axhspan(float(value[0]), float(value[1]), color="green", alpha=0.1, label="true range")
            ax.axhline(
                (float(value[0]) + float(value[1])) / 2, color="green", ls="--", lw=1, label="range mean"
            )
        elif value is not None:
            ax.axhline(float(value), color="green", ls="--", lw=1, label="true value")
        ax.set(
            xlabel="training images seen",
            ylabel=LEVEL_LABELS.get(config_value(run.config, "noise.name"), "noise level"),
            title=run.name,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out / "noise_level.png")
