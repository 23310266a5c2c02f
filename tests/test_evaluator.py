"""ssdn.eval.evaluator: end to end on small subsets, batching/worker invariance, outputs on disk, errors."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssdn.baselines.cbm3d import CBM3D
from ssdn.data.testsets import TestImage
from ssdn.eval.evaluator import evaluate, write_results
from ssdn.eval.metrics import quantize
from ssdn.eval.protocol import ProtocolConfig, protocol_configs
from ssdn.eval.results import Results
from ssdn.eval.settings import EvalSettings

SETS = ("kodak", "bsd300", "set14")


class IdentityNet:
    """Stands in for a network checkpoint: square inputs with a side multiple of 32, two outputs."""

    name = "identity-net"
    requires_square_multiple = 32

    def __init__(self) -> None:
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.device: torch.device | None = None

    def to(self, device: torch.device) -> IdentityNet:
        self.device = device
        return self

    def denoise(self, noisy: torch.Tensor, params: torch.Tensor) -> dict[str, torch.Tensor]:
        assert noisy.shape[-1] == noisy.shape[-2] and noisy.shape[-1] % 32 == 0
        assert noisy.dtype == torch.float32 and params.dtype == torch.float64
        self.inputs.append((noisy.clone(), params.clone()))
        return {"pme": noisy.clone(), "mu": noisy.clamp(0, 1)}


class ShapeRecorder:
    """A classical method (no padding): records the input shapes it is given and returns them unchanged."""

    name = "recorder"
    requires_square_multiple = None

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def denoise(self, noisy: torch.Tensor, params: torch.Tensor) -> dict[str, torch.Tensor]:
        self.shapes.append(tuple(noisy.shape))
        return {"out": noisy}


def protocols(
    sets: str | tuple[str, ...], noise: object = ("gaussian", 25), **kw: object
) -> list[ProtocolConfig]:
    """The protocols an ``eval`` config section with these settings yields (RGB)."""
    return protocol_configs({"sets": sets, **kw}, noise, channels=3)  # type: ignore[arg-type]


def _rows(results: Results) -> list[tuple]:
    return [
        (r.set, r.index, r.param, tuple(r.psnr.items()), tuple(r.ssim.items()))
        for s in results.sets.values()
        for r in s.rows
    ]


def test_network_path_end_to_end(data_root: Path, tmp_path: Path) -> None:
    net = IdentityNet()
    run = EvalSettings(root=data_root, progress=False, device="cpu")
    res = evaluate(net, protocols(SETS, repeats=2, limit=2, crop=64), run)
    assert net.device == torch.device("cpu")
    assert list(res.sets) == list(SETS) and res.method == "identity-net"
    for name, s in res.sets.items():
        assert s.count == 4 and len(s.rows) == 4 and s.reported == "pme"
        assert s.psnr["pme"] == pytest.approx(s.psnr["noisy"])  # the identity's output is its input
        assert 20 < s.psnr["noisy"] < 21  # σ = 25: about 20.2 dB
        assert s.psnr["mu"] >= s.psnr["pme"]  # clipping to [0, 1] can only help
        assert s.psnr["pme"] == pytest.approx(np.mean([r.psnr["pme"] for r in s.rows]))
        assert s.ssim["pme"] == pytest.approx(np.mean([r.ssim["pme"] for r in s.rows]))
        assert s.protocol["repeats"] == 2 and s.protocol["pad_mode"] == "authors" and s.protocol["seed"] == 0
        assert s.protocol["noise"] == {"name": "gaussian", "value": 25.0, "label": "gaussian25"}
        assert s.protocol["padded_sizes"] == [64]
        assert [(r.rep, r.image) for r in s.rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert all(r.set == name and (r.height, r.width) == (64, 64) and r.param == 25.0 for r in s.rows)
    assert "kodak" in res.summary() and "pme PSNR" in res.summary()

    json_path, csv_path = write_results(res, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["per_image.csv", "results.json"]
    data = json.loads(json_path.read_text())
    assert data["method"] == "identity-net" and data["sets"]["bsd300"]["count"] == 4
    assert data["sets"]["set14"]["psnr"]["pme"] == pytest.approx(res.sets["set14"].psnr["pme"])
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 12
    assert list(table[0])[:8] == ["set", "index", "rep", "image", "name", "height", "width", "param"]
    assert {"psnr_noisy", "psnr_pme", "psnr_mu", "ssim_noisy", "ssim_pme", "ssim_mu"} <= set(table[0])
    assert float(table[5]["psnr_pme"]) == res.sets["bsd300"].rows[1].psnr["pme"]


def test_batch_size_does_not_change_inputs_or_scores(data_root: Path) -> None:
    kodak = protocols("kodak", ("poisson", [5, 50]), repeats=2, limit=3, crop=48)
    one, three = IdentityNet(), IdentityNet()
    r1 = evaluate(one, kodak, EvalSettings(batch_size=1, root=data_root, progress=False))
    r3 = evaluate(three, kodak, EvalSettings(batch_size=4, root=data_root, progress=False))
    assert [x[0].shape[0] for x in three.inputs] == [4, 2]  # 6 items of one padded size
    assert torch.equal(torch.cat([x[0] for x in one.inputs]), torch.cat([x[0] for x in three.inputs]))
    assert torch.equal(torch.cat([x[1] for x in one.inputs]), torch.cat([x[1] for x in three.inputs]))
    assert _rows(r1) == _rows(r3)


def test_classical_methods_get_unpadded_inputs_batched_by_size() -> None:
    rng = np.random.default_rng(0)
    shapes = [(20, 30), (20, 30), (24, 16)]
    toy = [
        TestImage(f"t{i}.png", rng.integers(0, 256, (*s, 3), dtype=np.uint8)) for i, s in enumerate(shapes)
    ]
    rec = ShapeRecorder()
    toy_protocol = protocols("toy", ("gaussian", 10), repeats=2)
    res = evaluate(rec, toy_protocol, EvalSettings(batch_size=4, progress=False), images={"toy": toy})
    assert rec.shapes == [(2, 3, 20, 30), (1, 3, 24, 16), (2, 3, 20, 30), (1, 3, 24, 16)]
    assert res.sets["toy"].count == 6 and res.sets["toy"].protocol["padded_sizes"] == [32]


def test_save_images_writes_the_first_pass(data_root: Path, tmp_path: Path) -> None:
    net = IdentityNet()
    kodak = protocols("kodak", repeats=2, limit=1, crop=40)
    evaluate(net, kodak, EvalSettings(root=data_root, progress=False, save_images=tmp_path / "img"))
    folder = tmp_path / "img" / "kodak"
    names = ["000-kodim01-mu.png", "000-kodim01-noisy.png", "000-kodim01-pme.png"]
    assert sorted(p.name for p in folder.iterdir()) == names  # first pass only, no temp files
    saved = np.asarray(Image.open(folder / "000-kodim01-pme.png"))
    expected = quantize(net.inputs[0][0][0, :, :40, :40]).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(saved, expected)


def test_errors_are_explicit(data_root: Path) -> None:
    kodak = protocols("kodak", repeats=1, limit=1, crop=40)
    run = EvalSettings(root=data_root, progress=False)
    with pytest.raises(TypeError, match="denoise"):
        evaluate(object(), kodak, run)  # type: ignore[arg-type]

    class Bad(IdentityNet):
        def denoise(self, noisy: torch.Tensor, params: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"out": noisy[:, :1]}

    with pytest.raises(ValueError, match=r"output 'out' must be a tensor \(N, C, H, W\)"):
        evaluate(Bad(), kodak, run)

    class Coarse(IdentityNet):
        requires_square_multiple = 128

    with pytest.raises(ValueError, match="multiple of 128"):
        evaluate(Coarse(), kodak, run)
    with pytest.raises(ValueError, match="workers > 1"):
        evaluate(IdentityNet(), kodak, replace(run, workers=2))
    with pytest.raises(ValueError, match="one noise model"):
        evaluate(IdentityNet(), kodak + protocols("set14", ("poisson", 30), repeats=1), run)
    with pytest.raises(ValueError, match="at least one ProtocolConfig"):
        evaluate(IdentityNet(), [], run)
    with pytest.raises(ValueError, match="batch_size and workers must be >= 1"):
        EvalSettings(batch_size=0)
    with pytest.raises(ValueError, match="calibrate needs every image"):
        EvalSettings(calibrate=True, workers=2)


@pytest.mark.gpu
def test_device_does_not_change_inputs_or_scores(data_root: Path) -> None:
    """Noise is drawn on the CPU whatever the device, so a CUDA run scores exactly like a CPU run."""
    kodak = protocols("kodak", ("gaussian", [5, 50]), repeats=2, limit=2, crop=48)
    run = EvalSettings(root=data_root, progress=False, batch_size=2)
    cpu, gpu = IdentityNet(), IdentityNet()
    r_cpu = evaluate(cpu, kodak, replace(run, device="cpu"))
    r_gpu = evaluate(gpu, kodak, replace(run, device="cuda"))
    assert gpu.inputs[0][0].is_cuda and gpu.device == torch.device("cuda")
    assert torch.equal(torch.cat([x[0] for x in cpu.inputs]), torch.cat([x[0].cpu() for x in gpu.inputs]))
    assert _rows(r_cpu) == _rows(r_gpu)


def test_cbm3d_end_to_end_and_workers_give_identical_results(data_root: Path) -> None:
    """CBM3D (σ known) on two 64² crops of each set; then KODAK again in a pool of 2 workers."""
    pytest.importorskip("bm3d")
    kw = {"repeats": 1, "limit": 2, "crop": 64}
    serial = evaluate(CBM3D("known"), protocols(SETS, **kw), EvalSettings(root=data_root, progress=False))
    for s in serial.sets.values():
        assert s.count == 2 and s.reported == "out"
        assert s.psnr["out"] > s.psnr["noisy"] + 5
        assert s.ssim["out"] > s.ssim["noisy"]
    pool = EvalSettings(workers=2, root=data_root, progress=False)
    parallel = evaluate(CBM3D("known"), protocols("kodak", **kw), pool)
    assert _rows(parallel) == [r for r in _rows(serial) if r[0] == "kodak"]


# Measured with torch 2.13.0+cpu, bm3d 4.0.3 single-threaded (16 s on 2 shared cores): 30.188302 dB, per
# image 28.7395 and 31.6371 dB; noisy inputs 20.3058 and 20.5752 dB.
PINNED_CBM3D_PSNR = 30.188302
PINNED_NOISY_PSNR = 20.440503991484775


@pytest.mark.slow
def test_cbm3d_pinned_on_two_kodak_images(data_root: Path) -> None:
    """CBM3D, σ = 25 known, KODAK kodim01–02, 256² centre crops, 1 pass, seed 0, authors padding."""
    pytest.importorskip("bm3d")
    kodak = protocols("kodak", ("gaussian", 25), repeats=1, limit=2, crop=256)
    res = evaluate(CBM3D("known"), kodak, EvalSettings(root=data_root, progress=False))
    s = res.sets["kodak"]
    assert s.psnr["out"] == pytest.approx(PINNED_CBM3D_PSNR, abs=0.02)
    assert s.psnr["noisy"] == pytest.approx(PINNED_NOISY_PSNR, abs=1e-6)  # the inputs themselves are exact


class Interrupted(RuntimeError):
    pass


class Smoother:
    """A deterministic classical method that records what it denoised and can be 'killed' after N images."""

    name = "smoother"
    requires_square_multiple = None

    def __init__(self, die_after: int | None = None) -> None:
        self.params: list[float] = []
        self.die_after = die_after

    def denoise(self, noisy: torch.Tensor, params: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.die_after is not None and len(self.params) >= self.die_after:
            raise Interrupted
        self.params.extend(params.tolist())
        return {"out": torch.nn.functional.avg_pool2d(noisy, 3, stride=1, padding=1, count_include_pad=False)}


def _toy_images(n: int = 3) -> dict[str, list[TestImage]]:
    rng = np.random.default_rng(1)
    return {
        "toy": [TestImage(f"t{i}.png", rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)) for i in range(n)]
    }


def test_journal_resumes_an_interrupted_run_with_identical_results(tmp_path: Path) -> None:
    """Killed after 4 of 6 items, the rerun denoises only the last 2 and reports what one run reports."""
    images, quiet = _toy_images(), EvalSettings(progress=False)
    journalled = replace(quiet, journal_dir=tmp_path)
    toy = protocols(
        "toy", ("gaussian", [5, 50]), repeats=2
    )  # per-item σ, so the recorded params identify items
    whole = Smoother()
    reference = evaluate(whole, toy, quiet, images)
    assert len(whole.params) == 6

    with pytest.raises(Interrupted):
        evaluate(Smoother(die_after=4), toy, journalled, images)
    journal = tmp_path / "partial-toy.jsonl"
    assert len(journal.read_text().splitlines()) == 1 + 4  # key line + one line per scored item

    rest = Smoother()
    resumed = evaluate(rest, toy, journalled, images)
    assert rest.params == whole.params[4:]
    assert _rows(resumed) == _rows(reference)
    assert resumed.sets["toy"].psnr == reference.sets["toy"].psnr
    write_results(resumed, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_image.csv", "results.json"]


def test_journal_of_another_evaluation_or_cut_short_line(tmp_path: Path) -> None:
    images, run = _toy_images(), EvalSettings(progress=False, journal_dir=tmp_path)
    run_b = replace(run, identity={"checkpoint": "b.ckpt"})
    toy, toy_seed1 = protocols("toy", repeats=2), protocols("toy", repeats=2, seed=1)
    with pytest.raises(Interrupted):
        evaluate(Smoother(die_after=3), toy, run, images)
    journal = tmp_path / "partial-toy.jsonl"
    with journal.open("a") as f:
        f.write('{"set": "toy", "index": 3, "rep')  # the write a kill cut short
    again = Smoother()
    evaluate(again, toy, run, images)
    assert len(again.params) == 3  # the cut line is not an item
    complete = Smoother()
    evaluate(complete, toy, run, images)
    assert complete.params == []  # the journal stays complete until write_results supersedes it

    other_seed = Smoother()
    evaluate(other_seed, toy_seed1, run, images)  # another protocol: nothing is reused
    assert len(other_seed.params) == 6
    other_identity = Smoother()
    evaluate(other_identity, toy_seed1, run_b, images)
    assert len(other_identity.params) == 6

    journal.write_text(journal.read_text().splitlines()[0] + "\nnot json\n{}\n")
    with pytest.raises(ValueError, match=r"partial-toy.jsonl, line 2: not a scored item"):
        evaluate(Smoother(), toy_seed1, run_b, images)
