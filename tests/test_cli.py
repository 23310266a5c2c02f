"""Command-line tools on a tiny trained checkpoint: evaluate under the protocol, denoise your own images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssdn import denoise, evaluate
from ssdn.train import run
from ssdn.training.checkpoints import CheckpointError
from tests.conftest import TINY, compose_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny_run")
    run(compose_config(*TINY, output_dir=out))
    return out / "checkpoints" / "last.ckpt"


def test_evaluate_checkpoint_writes_results(checkpoint: Path, data_root: Path, tmp_path: Path) -> None:
    results = evaluate.main(
        [
            "--checkpoint",
            str(checkpoint),
            "--sets",
            "kodak",
            "bsd300",
            "set14",
            "--repeats",
            "1",
            "--limit",
            "2",
            "--crop",
            "64",
            "--root",
            str(data_root),
            "--out",
            str(tmp_path),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["sets"]) == {"kodak", "bsd300", "set14"}
    assert data["method"] == results.method
    lines = (tmp_path / "per_image.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 * 2
    assert "psnr_pme" in lines[0] and "psnr_mu" in lines[0] and "psnr_noisy" in lines[0]


def test_evaluate_bf16_is_an_explicit_option(checkpoint: Path, data_root: Path, tmp_path: Path) -> None:
    common = ["--checkpoint", str(checkpoint), "--sets", "kodak", "--repeats", "1", "--limit", "1"]
    common += ["--crop", "64", "--root", str(data_root), "--no-progress", "--device", "cpu"]
    fp32 = evaluate.main([*common, "--out", str(tmp_path / "fp32")])
    bf16 = evaluate.main([*common, "--out", str(tmp_path / "bf16"), "--bf16"])
    # same noisy inputs, different network precision: close but not identical scores
    a, b = (
        fp32.sets["kodak"].psnr[fp32.sets["kodak"].reported],
        bf16.sets["kodak"].psnr[bf16.sets["kodak"].reported],
    )
    assert a != b and abs(a - b) < 0.5
    assert fp32.sets["kodak"].psnr["noisy"] == bf16.sets["kodak"].psnr["noisy"]


def test_evaluate_needs_noise_for_classical(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        evaluate.main(["--method", "cbm3d_known", "--out", str(tmp_path)])


def test_denoise_own_image(checkpoint: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "mine.png"
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(src)
    denoise.main(
        [str(checkpoint), str(src), "--out", str(tmp_path / "out"), "--param", "25", "--device", "cpu"]
    )
    out = np.asarray(Image.open(tmp_path / "out" / "mine.png"))
    assert out.shape == (50, 70, 3) and out.dtype == np.uint8


def test_denoise_requires_param_for_known_noise_models(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(src)
    with pytest.raises(SystemExit) as exit_info:
        denoise.main([str(checkpoint), str(src), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert exit_info.value.code == 2 and "--param" in capsys.readouterr().err


def test_denoise_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        denoise.load_denoiser(tmp_path / "nope.ckpt")
