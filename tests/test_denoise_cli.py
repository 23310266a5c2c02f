"""The batch denoise CLI cannot lose data: refusals before any work, skipped failures, resumable, exact I/O."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
import torch
from PIL import Image

from ssdn import denoise
from ssdn.data.io import load_native, load_native_with_alpha
from ssdn.errors import UserError
from ssdn.noise import NoiseParamError, build_noise
from ssdn.train import run
from ssdn.training.module import DenoiserModule
from tests.conftest import TINY, compose_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny_run")
    run(compose_config(*TINY, output_dir=out))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture
def identity(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> DenoiserModule:
    """The tiny model with a denoiser that returns its input and a constant std of 0.01: what is written must
    then equal what was read, bit for bit."""
    module = denoise.load_denoiser(checkpoint)

    def fake(noisy: torch.Tensor, params: torch.Tensor, bf16: bool | None = None, uncertainty: bool = False):
        out = {"pme": noisy.float().clone()}
        return out | ({"posterior_std": torch.full_like(noisy, 0.01)} if uncertainty else {})

    module.denoise = fake  # type: ignore[method-assign]
    monkeypatch.setattr(denoise, "load_denoiser", lambda *_args, **_kw: module)
    return module


def _png(path: Path, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def _main(ckpt: Path, *args: str) -> int:
    """Exit status of the CLI (0 when it returns)."""
    try:
        denoise.main([str(ckpt), *args, "--device", "cpu"])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_output_onto_an_input_is_refused_before_any_work(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _png(tmp_path / "x.png", (40, 40, 3))
    assert (
        _main(checkpoint, str(tmp_path / "x.png"), "--out", str(tmp_path), "--param", "25", "--overwrite")
        == 2
    )
    err = capsys.readouterr().err
    assert "refusing to overwrite the input" in err and "x.png" in err and "Traceback" not in err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), src)


def test_two_inputs_writing_one_output_are_refused(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _png(tmp_path / "a" / "x.png", (40, 40, 3))
    _png(tmp_path / "b" / "x.png", (40, 40, 3))
    _png(tmp_path / "c" / "y.jpg", (40, 40, 3))
    _png(tmp_path / "c" / "y.png", (40, 40, 3))
    out = tmp_path / "out"
    for inputs in ([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"], [tmp_path / "c"]):
        assert _main(checkpoint, *map(str, inputs), "--out", str(out), "--param", "25") == 2
        err = capsys.readouterr().err
        assert "two inputs would write the same output" in err
        assert ("x.png" in err) if inputs[0].name == "x.png" else ("y.jpg" in err and "y.png" in err)
    assert not out.exists()
    # folders mirror their structure, so the same names below two sub-folders do not clash
    assert (
        _main(checkpoint, str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--param", "25") == 2
    )
    assert (
        _main(checkpoint, str(tmp_path), "--out", str(out), "--param", "25") == 2
    )  # c/y.{jpg,png} still clash


def test_existing_outputs_need_overwrite_or_skip(
    identity: DenoiserModule, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b", "c"):
        _png(tmp_path / "in" / f"{name}.png", (30, 20, 3))
    out = tmp_path / "out"
    args = [str(tmp_path / "in"), "--out", str(out), "--param", "25"]
    assert _main(checkpoint, *args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    capsys.readouterr()
    assert _main(checkpoint, *args) == 2
    assert "3 output(s) exist already" in capsys.readouterr().err
    # a killed batch: b's output is missing; --skip-existing denoises b only
    (out / "b.png").unlink()
    assert _main(checkpoint, *args, "--skip-existing") == 0
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [str(out / "b.png")]
    assert "1 written, 2 skipped" in captured.err
    assert _main(checkpoint, *args, "--overwrite") == 0
    assert "3 written" in capsys.readouterr().err
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_corrupt_file_is_skipped_and_the_rest_written(
    identity: DenoiserModule, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _png(tmp_path / "in" / "a.png", (30, 20, 3))
    (tmp_path / "in" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    _png(tmp_path / "in" / "c.png", (30, 20, 3))
    out = tmp_path / "out"
    assert _main(checkpoint, str(tmp_path / "in"), "--out", str(out), "--param", "25") == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    err = capsys.readouterr().err
    assert "2 written, 0 skipped (outputs exist), 1 failed" in err and "failed: " in err and "b.png" in err


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_images_round_trip_exactly_through_tiles(
    identity: DenoiserModule, checkpoint: Path, tmp_path: Path, suffix: str
) -> None:
    pixels = np.random.default_rng(1).integers(0, 65536, (100, 150, 3), dtype=np.uint16)
    src = tmp_path / "in" / f"deep{suffix}"
    src.parent.mkdir()
    if suffix == ".tif":
        tifffile.imwrite(src, pixels, photometric="rgb")
    else:
        png.Writer(150, 100, greyscale=False, bitdepth=16).write(src.open("wb"), pixels.reshape(100, -1))
    out = tmp_path / "out"
    args = ["--out", str(out), "--param", "25", "--tile", "64", "--overlap", "32"]
    assert _main(checkpoint, str(src), *args) == 0
    result = load_native(out / f"deep{suffix}")
    assert result.dtype == np.uint16 and np.array_equal(result, pixels)


def test_alpha_is_passed_through(identity: DenoiserModule, checkpoint: Path, tmp_path: Path) -> None:
    rgba = _png(tmp_path / "in" / "see-through.png", (40, 50, 4), seed=2)
    gray_alpha = _png(tmp_path / "in" / "ga.png", (40, 50, 2), seed=3)
    out = tmp_path / "out"
    assert _main(checkpoint, str(tmp_path / "in"), "--out", str(out), "--param", "25") == 0
    colour, alpha = load_native_with_alpha(out / "see-through.png")
    assert alpha is not None and np.array_equal(np.dstack([colour, alpha]), rgba)
    colour, alpha = load_native_with_alpha(out / "ga.png")  # gray in, the RGB model's output: RGB + alpha
    assert alpha is not None and np.array_equal(alpha[:, :, 0], gray_alpha[:, :, 1])
    assert np.array_equal(colour, np.repeat(gray_alpha[:, :, :1], 3, axis=2))


def test_folders_are_recursive_and_globs_mirror_below_their_fixed_part(
    identity: DenoiserModule, checkpoint: Path, tmp_path: Path
) -> None:
    _png(tmp_path / "in" / "top.png", (20, 20, 3))
    _png(tmp_path / "in" / "sub" / "deep.jpg", (20, 20, 3))
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    assert _main(checkpoint, str(tmp_path / "in"), "--out", str(tmp_path / "o1"), "--param", "25") == 0
    assert sorted(p.relative_to(tmp_path / "o1").as_posix() for p in (tmp_path / "o1").rglob("*.png")) == [
        "sub/deep.png",
        "top.png",
    ]
    pattern = str(tmp_path / "in" / "**" / "*.jpg")
    assert _main(checkpoint, pattern, "--out", str(tmp_path / "o2"), "--param", "25") == 0
    assert (tmp_path / "o2" / "sub" / "deep.png").is_file()
    assert (
        _main(checkpoint, str(tmp_path / "in" / "*.gif"), "--out", str(tmp_path / "o3"), "--param", "1") == 2
    )


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("-25", "sigma >= 0"),
        ("nan", "sigma >= 0"),
        ("inf", "sigma >= 0"),
        ("abc", "give numbers"),
        ("1,2", "needs 1 value"),
    ],
)
def test_bad_param_is_refused_with_exit_2(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], param: str, message: str
) -> None:
    _png(tmp_path / "x.png", (20, 20, 3))
    assert _main(checkpoint, str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), f"--param={param}") == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("python -m ssdn.denoise: error: --param")
        and message in err
        and len(err.splitlines()) == 1
    )
    assert not (tmp_path / "o").exists()


def test_noise_models_check_their_own_domain() -> None:
    build_noise("poisson", 30).check_params([30.0])
    build_noise("impulse", 0.5).check_params([1.0])
    build_noise("poisson_gaussian", {"a": 0.01, "b": 0.0002}).check_params([0.0, 0.0])
    for name, value, bad in [
        ("poisson", 30, [0.0]),
        ("impulse", 0.5, [1.5]),
        ("impulse", 0.5, [float("nan")]),
        ("poisson_gaussian", {"a": 0.01, "b": 0.0002}, [0.01, -1.0]),
    ]:
        with pytest.raises(NoiseParamError, match="--param"):
            build_noise(name, value).check_params(bad)
    assert issubclass(NoiseParamError, UserError)


def test_known_level_model_needs_a_param_and_debug_shows_the_traceback(
    checkpoint: Path, tmp_path: Path
) -> None:
    _png(tmp_path / "x.png", (20, 20, 3))
    args = [str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]
    assert _main(checkpoint, *args) == 2
    with pytest.raises(UserError, match="--param"):
        denoise.main([str(checkpoint), *args, "--debug"])
    assert _main(tmp_path / "missing.ckpt", *args, "--param", "25") == 2
    assert (
        _main(checkpoint, str(tmp_path / "nothing.png"), "--out", str(tmp_path / "o"), "--param", "25") == 2
    )


def test_param_auto_estimates_sigma_per_image(
    identity: DenoiserModule, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gen = np.random.default_rng(4)
    ramp = np.linspace(60, 190, 128)[None, :, None] * np.ones((96, 1, 3))
    noisy = np.clip(np.round(ramp + gen.normal(0, 20, ramp.shape)), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "n.png")
    assert _main(checkpoint, str(tmp_path / "n.png"), "--out", str(tmp_path / "o"), "--param", "auto") == 0
    line = capsys.readouterr().out.strip()
    sigma = float(line.split("sigma=")[1].split()[0])
    assert 18 < sigma < 22 and line.endswith("(auto)")


def test_uncertainty_is_written_in_image_units(
    identity: DenoiserModule, checkpoint: Path, tmp_path: Path
) -> None:
    _png(tmp_path / "x.png", (30, 40, 3))
    assert (
        _main(
            checkpoint,
            str(tmp_path / "x.png"),
            "--out",
            str(tmp_path / "o"),
            "--param",
            "25",
            "--uncertainty",
        )
        == 0
    )
    std = tifffile.imread(tmp_path / "o" / "x.std.tif")
    assert std.dtype == np.float32 and std.shape == (30, 40, 3)
    np.testing.assert_allclose(std, 2.55, rtol=1e-6)
    colour = np.asarray(Image.open(tmp_path / "o" / "x.std.png"))
    assert colour.shape == (30, 40, 3) and colour.dtype == np.uint8


def test_real_model_tiles_and_uncertainty(checkpoint: Path, tmp_path: Path) -> None:
    """The untrained tiny model end to end: a strip through tiles, with its posterior std."""
    _png(tmp_path / "strip.png", (40, 300, 3))
    args = ["--out", str(tmp_path / "o"), "--param", "25", "--tile", "64", "--overlap", "32", "--uncertainty"]
    assert _main(checkpoint, str(tmp_path / "strip.png"), *args) == 0
    assert load_native(tmp_path / "o" / "strip.png").shape == (40, 300, 3)
    std = tifffile.imread(tmp_path / "o" / "strip.std.tif")
    assert std.shape == (40, 300, 3) and np.isfinite(std).all() and (std >= 0).all()
