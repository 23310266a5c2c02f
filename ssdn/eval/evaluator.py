"""Evaluate any denoiser on the paper's protocol and write the results.

A denoiser is any object with ``name``, ``requires_square_multiple`` and
``denoise(noisy, params) -> dict[str, Tensor]`` (docs/api-contract.md); the first key is the reported one.
Networks (``requires_square_multiple`` set) get the padded square noisy images, batched among items of
equal padded size (in ``authors`` mode: a whole set). Classical methods (``None``) get the noisy image
cropped to H×W, batched among items of equal H×W, optionally in a process pool (``workers``,
``ssdn.eval.pool``). Scores are per image on the output cropped to H×W (``ssdn.eval.metrics``), for every
output key and for the noisy input; a set's score is the mean over its replicated list
(``ssdn.eval.results``). What is scored is fixed by one ``ProtocolConfig`` per set (``ssdn.eval.protocol``);
how it is run (``ssdn.eval.settings.EvalSettings``: device, batch size, workers, journal) cannot change a
number. A network input square larger than ``tile`` (none of the paper's sets: they pad to at most 768) is
denoised in tiles (``ssdn.inference.tiling``), so memory stays bounded; squares up to ``tile`` run whole, as the
protocol always ran them. With ``journal_dir`` an interrupted run resumes (``ssdn.eval.journal``).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ssdn.data.testsets import TestImage
from ssdn.eval.calibration import Calibration
from ssdn.eval.journal import Journal, journal_path
from ssdn.eval.metrics import mean_psnr, psnr, quantize, ssim
from ssdn.eval.pool import run_in_pool
from ssdn.eval.protocol import NoisyItem, PreparedSet, ProtocolConfig, generate, prepare_set
from ssdn.eval.results import NOISY_KEY, UNCERTAINTY_KEY, ImageResult, Results, SetResult
from ssdn.eval.settings import EVAL_TILE, EvalSettings
from ssdn.inference.tiling import DEFAULT_OVERLAP, denoise_tiled
from ssdn.utils import atomic_write_json, atomic_write_png, atomic_write_text


@runtime_checkable
class Denoiser(Protocol):
    # read-only members, so a class attribute narrower than the protocol's (``int``) still satisfies it
    @property
    def name(self) -> str: ...

    @property
    def requires_square_multiple(self) -> int | None: ...

    def denoise(self, noisy: Tensor, params: Tensor) -> dict[str, Tensor]: ...


# ----------------------------------------------------------------------------------------------- running


def _batches(items: Iterable[NoisyItem], batch_size: int, key: Callable[[NoisyItem], Any]) -> Iterator[list]:
    """Consecutive items with equal ``key`` (input size), at most ``batch_size`` per batch, in order."""
    batch: list[NoisyItem] = []
    for item in items:
        if batch and (len(batch) == batch_size or key(item) != key(batch[0])):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _inputs(batch: list[NoisyItem], classical: bool) -> tuple[Tensor, Tensor]:
    noisy = torch.stack([it.noisy_unpadded() if classical else it.noisy for it in batch])
    params = torch.stack([it.params for it in batch])  # (N,) or (N, P) float64, paper units
    return noisy, params


def _check_outputs(outputs: Mapping[str, Tensor], n: int, c: int, name: str) -> None:
    if not isinstance(outputs, Mapping) or not outputs:
        raise TypeError(
            f"{name}.denoise must return a non-empty dict of images, got {type(outputs).__name__}"
        )
    for key, out in outputs.items():
        if key == NOISY_KEY:
            raise ValueError(f"{name}.denoise: output key {NOISY_KEY!r} is reserved for the noisy input")
        if not isinstance(out, Tensor) or out.ndim != 4 or tuple(out.shape[:2]) != (n, c):
            raise ValueError(
                f"{name}.denoise: output {key!r} must be a tensor (N, C, H, W) with N, C = {n}, {c} "
                f"like the input, got {getattr(out, 'shape', type(out).__name__)}"
            )


def _save_png(pixels: Tensor, path: Path) -> None:
    atomic_write_png(path, quantize(pixels).permute(1, 2, 0).numpy())


def _score(item: NoisyItem, outputs: dict[str, Tensor], set_name: str) -> ImageResult:
    h, w = item.height, item.width
    crops = [(NOISY_KEY, item.noisy_unpadded()), *((k, v[:, :h, :w]) for k, v in outputs.items())]
    images = {k: quantize(v) for k, v in crops}  # quantised once; psnr/ssim take uint8 as is
    clean = quantize(item.clean)
    return ImageResult(
        set=set_name,
        index=item.index,
        rep=item.rep,
        image=item.image,
        name=item.name,
        height=h,
        width=w,
        param=item.param,
        psnr={k: float(psnr(v, clean)[0]) for k, v in images.items()},
        ssim={k: float(ssim(v, clean)[0]) for k, v in images.items()},
    )


def _denoise_with(
    denoiser: Any, params: Tensor, extra: Mapping[str, bool], noisy: Tensor
) -> dict[str, Tensor]:
    """One tile batch through ``denoiser`` at the whole image's params (the tiler's ``fn``)."""
    return denoiser.denoise(noisy, params, **extra)


def _run_here(
    denoiser: Any,
    work: Iterable[tuple[list[NoisyItem], Tensor, Tensor]],
    device: torch.device | None,
    uncertainty: bool = False,
    tile: int = EVAL_TILE,
) -> Iterator[tuple[list[NoisyItem], dict[str, Tensor]]]:
    """Denoise the batches in this process (networks; ``workers`` = 1), on ``device`` if given; ``uncertainty``
    asks the denoiser for its posterior std too (only then, so other denoisers need not know the keyword).
    A network's input square larger than ``tile`` goes through ``denoise_tiled``, all images of the batch cut
    alike so their params stay aligned."""
    extra = {"uncertainty": True} if uncertainty else {}
    for batch, noisy, params in work:
        if device is not None:
            noisy, params = noisy.to(device), params.to(device)
        multiple = denoiser.requires_square_multiple
        with torch.no_grad():
            if multiple is not None and noisy.shape[-1] > tile:
                outputs = denoise_tiled(
                    partial(_denoise_with, denoiser, params, extra),
                    noisy,
                    tile,
                    min(DEFAULT_OVERLAP, tile // 2 // multiple * multiple),
                    multiple=multiple,
                )
            else:
                outputs = denoiser.denoise(noisy, params, **extra)
        yield batch, outputs


def _save_first_pass(item: NoisyItem, outputs: dict[str, Tensor], folder: Path) -> None:
    """PNGs of the noisy input and every output of one image, cropped to the image (``save_images``)."""
    stem = Path(item.name).stem
    _save_png(item.noisy_unpadded(), folder / f"{item.image:03d}-{stem}-{NOISY_KEY}.png")
    for k, v in outputs.items():
        _save_png(v[:, : item.height, : item.width], folder / f"{item.image:03d}-{stem}-{k}.png")


def _evaluate_set(
    denoiser: Any,
    prepared: PreparedSet,
    *,
    batch_size: int,
    device: torch.device | None,
    workers: int,
    progress: bool,
    save_images: Path | None,
    journal: Journal | None,
    calibration: Calibration | None,
    tile: int = EVAL_TILE,
) -> SetResult:
    cfg = prepared.config
    multiple = denoiser.requires_square_multiple
    classical = multiple is None
    if not classical and any(s % multiple for s in prepared.sizes):
        raise ValueError(
            f"{denoiser.name} needs square inputs with a side multiple of {multiple}, but the protocol pads "
            f"{cfg.set_name} to {sorted(set(prepared.sizes))} (multiple={cfg.multiple}); "
            f"use a protocol multiple that {multiple} divides"
        )
    key = (lambda it: (it.height, it.width)) if classical else (lambda it: it.size)
    done = journal.done if journal is not None else {}
    todo = (it for it in generate(prepared) if it.index not in done)
    work = ((batch, *_inputs(batch, classical)) for batch in _batches(todo, batch_size, key))
    if workers > 1:
        results = run_in_pool(denoiser, work, workers)
    else:
        results = _run_here(denoiser, work, device, uncertainty=calibration is not None, tile=tile)

    rows: list[ImageResult] = list(done.values())
    start = time.perf_counter()
    with tqdm(
        total=len(prepared),
        initial=len(rows),
        desc=f"{denoiser.name} {cfg.set_name}",
        unit="img",
        disable=not progress,
    ) as bar:
        for batch, outputs in results:
            _check_outputs(outputs, len(batch), batch[0].clean.shape[0], denoiser.name)
            outputs = {k: v.detach().cpu() for k, v in outputs.items()}
            std = outputs.pop(UNCERTAINTY_KEY, None)  # an uncertainty map, not an image to score
            if calibration is not None and std is None:
                raise ValueError(
                    f"{denoiser.name}.denoise(..., uncertainty=True) returned no {UNCERTAINTY_KEY!r}"
                )
            for j, item in enumerate(batch):
                out_j = {k: v[j] for k, v in outputs.items()}
                if calibration is not None and std is not None:
                    h, w = item.height, item.width
                    calibration.update(item.clean, next(iter(out_j.values()))[:, :h, :w], std[j][:, :h, :w])
                rows.append(_score(item, out_j, cfg.set_name))
                if journal is not None:
                    journal.append(rows[-1])
                if save_images is not None and item.rep == 0:
                    _save_first_pass(item, out_j, save_images / cfg.set_name)
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    rows.sort(key=lambda r: r.index)

    keys = list(rows[0].psnr)
    output_keys = [k for k in keys if k != NOISY_KEY]
    return SetResult(
        name=cfg.set_name,
        count=len(rows),
        reported=output_keys[0],
        psnr={k: mean_psnr(r.psnr[k] for r in rows) for k in keys},
        ssim={k: float(np.mean([r.ssim[k] for r in rows])) for k in keys},
        protocol={
            **asdict(cfg),
            "noise": {"name": cfg.noise.name, "value": cfg.noise.value, "label": cfg.noise.label()},
            "images": len(prepared.clean),
            "padded_sizes": sorted(set(prepared.sizes)),
        },
        seconds=seconds,
        sha256={n: h for n, h in zip(prepared.names, prepared.sha256, strict=False) if h is not None},
        rows=rows,
        calibration=calibration.result() if calibration is not None else None,
    )


def evaluate(
    denoiser: Denoiser,
    protocols: ProtocolConfig | Sequence[ProtocolConfig],
    settings: EvalSettings | None = None,
    images: Mapping[str, Sequence[TestImage]] | None = None,
) -> Results:
    """Run ``denoiser`` on each set, under its protocol (``protocol_configs`` builds them from a config), as
    ``settings`` say (``EvalSettings``: device, batch size, journal, calibration, ...; default ones if None).

    All protocols share one noise model (a ``Results`` reports one). The clean images come from the registered
    sets under ``settings.root``, or from ``images`` by set name. A denoiser with ``.to`` is moved to the
    device; an ``nn.Module`` is put in eval mode. Registered sets are verified against their checksums before
    scoring.
    """
    run = settings if settings is not None else EvalSettings()
    if not isinstance(denoiser, Denoiser):
        raise TypeError("denoiser needs .name, .requires_square_multiple and .denoise(noisy, params) -> dict")
    configs = [protocols] if isinstance(protocols, ProtocolConfig) else list(protocols)
    if not configs:
        raise ValueError("evaluate needs at least one ProtocolConfig (one per test set)")
    spec = configs[0].noise
    if any(c.noise != spec for c in configs):
        raise ValueError(
            f"all protocols must use one noise model, got {sorted({c.noise.label() for c in configs})}"
        )
    if run.workers > 1 and denoiser.requires_square_multiple is not None:
        raise ValueError(
            "workers > 1 is for classical (CPU) methods; run networks with batch_size and a device"
        )
    dev = torch.device(run.device) if run.device is not None else None
    if dev is not None and hasattr(denoiser, "to"):
        denoiser.to(dev)
    if isinstance(denoiser, torch.nn.Module):
        denoiser.eval()  # a network is scored in inference mode, whatever state the caller left it in
    out_dir = Path(run.save_images) if run.save_images is not None else None

    results: dict[str, SetResult] = {}
    for cfg in configs:
        prepared = prepare_set(
            cfg,
            None if images is None else images.get(cfg.set_name),
            root=run.root,
            allow_modified=run.allow_modified,
        )
        journal = None
        if run.journal_dir is not None:
            key = {"method": denoiser.name, "identity": dict(run.identity), "protocol": asdict(cfg)}
            journal = Journal(journal_path(run.journal_dir, cfg.set_name), key)
        results[cfg.set_name] = _evaluate_set(
            denoiser,
            prepared,
            batch_size=run.batch_size,
            device=dev,
            workers=run.workers,
            progress=run.progress,
            save_images=out_dir,
            journal=journal,
            calibration=Calibration() if run.calibrate else None,
            tile=run.tile,
        )
    meta = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "device": str(dev) if dev is not None else "cpu",
        "batch_size": run.batch_size,
        "workers": run.workers,
    }
    noise_info = {"name": spec.name, "value": spec.value, "label": spec.label()}
    return Results(method=denoiser.name, noise=noise_info, sets=results, meta=meta)


# ----------------------------------------------------------------------------------------------- writing


def _param_text(param: float | dict[str, float]) -> str:
    """The CSV's ``param`` cell: ``25.0`` for one parameter (as always), ``a=0.01 b=0.000384`` for several."""
    if isinstance(param, dict):
        return " ".join(f"{k}={v!r}" for k, v in param.items())
    return repr(param)


def write_results(results: Results, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results.json`` (summary) and ``per_image.csv`` (one row per scored item), each atomically;
    then remove the journals of the sets written, which these files supersede."""
    out = Path(out_dir)
    json_path, csv_path = out / "results.json", out / "per_image.csv"
    atomic_write_json(json_path, results.to_dict())

    rows = [r for s in results.sets.values() for r in s.rows]
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r.psnr if k not in keys)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    base = ["set", "index", "rep", "image", "name", "height", "width", "param"]
    writer.writerow(base + [f"psnr_{k}" for k in keys] + [f"ssim_{k}" for k in keys])
    for r in rows:
        writer.writerow(
            [r.set, r.index, r.rep, r.image, r.name, r.height, r.width, _param_text(r.param)]
            + [repr(r.psnr.get(k, float("nan"))) for k in keys]
            + [repr(r.ssim.get(k, float("nan"))) for k in keys]
        )
    atomic_write_text(csv_path, buf.getvalue())
    for name in results.sets:
        journal_path(out, name).unlink(missing_ok=True)
    return json_path, csv_path
