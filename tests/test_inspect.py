"""python -m ssdn.inspect FOLDER: level, correlation, verdict and advice; user errors exit 2 in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssdn.inspect import choose, main
from tests.test_correlation import blurred_noise, smooth_image

SIZE = 192


def _write(folder: Path, correlated: bool, count: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        shape = (SIZE, SIZE, 3)
        noise = blurred_noise(rng, shape, 15 / 255) if correlated else rng.normal(0, 15 / 255, shape)
        pixels = np.clip(np.rint((smooth_image(SIZE) + noise) * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0)


def test_independent_folder_prints_the_verdict_and_the_default_blind_spot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _write(tmp_path / "noisy", correlated=False)
    out = tmp_path / "report.json"
    main([str(folder), "--json", str(out)])
    text = capsys.readouterr().out
    assert "read 3 image(s)" in text and "img0.png  192x192  8-bit" in text
    assert "verdict: independent" in text and "the paper's blind spot applies" in text
    assert "channel correlation of the noise at a pixel: R-G" in text
    assert "noise=gaussian noise_params=sigma_global method.blind_hole=1 method.pd_stride=1" in text
    report = json.loads(out.read_text())
    assert report["correlation"]["independent"] is True
    assert report["correlation"]["sigma"] == pytest.approx(15.0, rel=0.1)
    assert report["recommendation"]["overrides"][0][-2:] == ["method.blind_hole=1", "method.pd_stride=1"]
    assert [i["path"] for i in report["images"]] == [str(folder / f"img{i}.png") for i in range(3)]


def test_correlated_folder_recommends_a_larger_blind_region(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _write(tmp_path / "noisy", correlated=True)
    main([str(folder)])
    text = capsys.readouterr().out
    assert "verdict: CORRELATED over 2 px" in text
    assert "method.blind_hole=5" in text and "method.pd_stride=3" in text
    assert "*" in text.split("spatial correlation")[1]  # over-threshold offsets are marked


def test_channel_correlated_folder_recommends_gaussian_channels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "noisy"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        noise = rng.normal(0, 10 / 255, (SIZE, SIZE, 3)) + rng.normal(0, 12 / 255, (SIZE, SIZE, 1))
        pixels = np.clip(np.rint((smooth_image(SIZE) + noise) * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    out = tmp_path / "report.json"
    main([str(folder), "--json", str(out)])
    text = capsys.readouterr().out
    line = next(li for li in text.splitlines() if li.startswith("channel correlation"))
    assert "R-G 0.5" in line and "G-B 0.5" in line
    assert (
        "noise model: gaussian_channels" in text
        and "noise=gaussian_channels noise_params=sigma_global" in text
    )
    report = json.loads(out.read_text())
    assert report["correlation"]["channel_correlation"] == pytest.approx(144 / 244, abs=0.05)
    assert report["recommendation"]["noise"] == "gaussian_channels"


def test_choose_spreads_the_images_over_the_sorted_listing() -> None:
    paths = [Path(f"{i:02d}.png") for i in range(10)]
    assert choose(paths, 3) == [Path("00.png"), Path("04.png"), Path("09.png")]
    assert choose(paths, 20) == paths


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "json-exists", "small", "max-images"])
def test_user_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    folder = tmp_path / "photos"
    argv = [str(folder)]
    named = str(folder)
    if case == "empty":
        folder.mkdir()
    elif case == "corrupt":
        _write(folder, correlated=False, count=1)
        (folder / "broken.png").write_bytes(b"not a png")
        named = str(folder / "broken.png")
    elif case == "json-exists":
        _write(folder, correlated=False, count=1)
        (tmp_path / "r.json").write_text("{}")
        argv += ["--json", str(tmp_path / "r.json")]
        named = str(tmp_path / "r.json")
    elif case == "small":
        folder.mkdir()
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "tiny.png")
    elif case == "max-images":
        _write(folder, correlated=False, count=1)
        argv += ["--max-images", "0"]
        named = "--max-images"
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("python -m ssdn.inspect: error: ") and named in err
    if case == "json-exists":
        assert (tmp_path / "r.json").read_text() == "{}"  # never overwritten unasked


def test_runs_as_a_module(tmp_path: Path) -> None:
    folder = _write(tmp_path / "noisy", correlated=False, count=1)
    done = subprocess.run(
        [sys.executable, "-m", "ssdn.inspect", str(folder), "--channels", "1"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert "verdict:" in done.stdout and "(8-bit units; Y " in done.stdout


def test_jpeg_is_read_with_its_exif_orientation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "jpeg"
    folder.mkdir()
    rng = np.random.default_rng(1)
    pixels = np.clip(np.rint((smooth_image(SIZE)[:128] + rng.normal(0, 0.05, (128, SIZE, 3))) * 255), 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.fromarray(pixels.astype(np.uint8)).save(folder / "photo.jpg", quality=95, exif=exif)
    main([str(folder)])
    assert "photo.jpg  128x192  8-bit" in capsys.readouterr().out  # stored 192 wide, displayed 128 wide
