"""The batch denoise CLI cannot lose data: refusals before any work, skipped failures, resumable, exact I/O."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
import torch
from omegaconf import OmegaConf
from PIL import Image

from ssdn import denoise
from ssdn.data.io import load_as_stored, load_native, load_native_with_alpha
from ssdn.errors import UserError
from ssdn.inference.denoiser import network_bf16
from ssdn.noise import NoiseParamError, build_noise
from ssdn.train import run
from ssdn.training import precision
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
    module.asked_bf16 = []  # type: ignore[attr-defined]

    def fake(noisy: torch.Tensor, params: torch.Tensor, bf16: bool | None = None, uncertainty: bool = False):
        module.asked_bf16.append(bf16)  # type: ignore[attr-defined]
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
    gray, alpha = load_as_stored(out / "ga.png")  # gray in, gray + alpha out (the RGB model's mean)
    assert alpha is not None and np.array_equal(alpha[:, :, 0], gray_alpha[:, :, 1])
    assert np.array_equal(gray, gray_alpha[:, :, :1])


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


def test_gray_and_deep_gray_keep_their_channels_and_depth(
    identity: DenoiserModule, checkpoint: Path, tmp_path: Path
) -> None:
    """A colour model denoises gray as RGB and writes it gray, at the input's depth (PIL's I;16 included)."""
    gen = np.random.default_rng(5)
    deep = gen.integers(0, 65536, (40, 30), dtype=np.uint16)
    (tmp_path / "in").mkdir()
    Image.fromarray(deep).save(tmp_path / "in" / "deep.png")  # PIL mode I;16
    tifffile.imwrite(tmp_path / "in" / "deep.tif", deep, photometric="minisblack")
    gray = _png(tmp_path / "in" / "gray.png", (40, 30))
    out = tmp_path / "out"
    assert _main(checkpoint, str(tmp_path / "in"), "--out", str(out), "--param", "25") == 0
    with Image.open(out / "deep.png") as img:
        assert img.mode == "I;16" and np.array_equal(np.asarray(img), deep)
    assert tifffile.imread(out / "deep.tif").dtype == np.uint16
    assert np.array_equal(tifffile.imread(out / "deep.tif"), deep)
    with Image.open(out / "gray.png") as img:
        assert img.mode == "L" and np.array_equal(np.asarray(img), gray)


def test_gray_output_is_the_mean_of_the_colour_models_channels(
    identity: DenoiserModule, checkpoint: Path, tmp_path: Path
) -> None:
    """Channel outputs 0.2, 0.4, 0.9 of a gray image are written as their mean, 0.5 (8-bit 128)."""
    levels = torch.tensor([0.2, 0.4, 0.9]).view(1, 3, 1, 1)
    identity.denoise = lambda noisy, *_a, **_k: {"pme": levels.expand_as(noisy).clone()}  # type: ignore[method-assign]
    _png(tmp_path / "g.png", (20, 20))
    assert _main(checkpoint, str(tmp_path / "g.png"), "--out", str(tmp_path / "o"), "--param", "25") == 0
    with Image.open(tmp_path / "o" / "g.png") as img:
        assert img.mode == "L" and (np.asarray(img) == 128).all()


def test_palette_images_come_out_rgb_and_say_so(
    identity: DenoiserModule, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rgb = _png(tmp_path / "rgb.png", (20, 24, 3))
    Image.open(tmp_path / "rgb.png").convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(
        tmp_path / "p.png"
    )
    expected = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert not np.array_equal(
        expected, rgb
    )  # the palette changed the colours: what is written is its colours
    assert _main(checkpoint, str(tmp_path / "p.png"), "--out", str(tmp_path / "o"), "--param", "25") == 0
    with Image.open(tmp_path / "o" / "p.png") as img:
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), expected)
    assert "palette image written as RGB" in capsys.readouterr().out


def test_rgb_into_a_grayscale_model_is_refused_per_image(
    identity: DenoiserModule, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    identity.channels = 1
    _png(tmp_path / "in" / "a.png", (20, 20, 3))
    gray = _png(tmp_path / "in" / "b.png", (20, 20))
    out = tmp_path / "out"
    assert _main(checkpoint, str(tmp_path / "in"), "--out", str(out), "--param", "25") == 1
    err = capsys.readouterr().err
    assert "a.png: a 3-channel image, but the model takes 1-channel (grayscale) images; convert it" in err
    assert "1 written, 0 skipped (outputs exist), 1 failed" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["b.png"]
    assert np.array_equal(np.asarray(Image.open(out / "b.png")), gray)


def test_out_inside_an_input_folder_is_never_read_back(
    identity: DenoiserModule, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A killed batch with --out inside the input folder resumes with --skip-existing (its outputs are not
    inputs), and a glob over the input folder does not match them either."""
    for name in ("a", "b"):
        _png(tmp_path / "in" / f"{name}.png", (20, 20, 3))
    out = tmp_path / "in" / "denoised"
    args = ["--out", str(out), "--param", "25"]
    assert _main(checkpoint, str(tmp_path / "in"), *args) == 0
    (out / "b.png").unlink()
    capsys.readouterr()
    assert _main(checkpoint, str(tmp_path / "in"), *args, "--skip-existing") == 0
    assert "1 written, 1 skipped (outputs exist), 0 failed" in capsys.readouterr().err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.png", "b.png"]
    assert _main(checkpoint, str(tmp_path / "in" / "**" / "*.png"), *args, "--overwrite") == 0
    assert "2 written, 0 skipped (outputs exist), 0 failed" in capsys.readouterr().err


def test_a_pipe_or_a_folder_named_like_an_image_is_reported_and_the_rest_written(
    identity: DenoiserModule, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "in" / "pipe.png"
    _png(tmp_path / "in" / "a.png", (20, 20, 3))
    os.mkfifo(fifo)
    (tmp_path / "in" / "x.png").mkdir()
    out = tmp_path / "out"
    assert (
        _main(checkpoint, str(fifo), str(tmp_path / "in" / "a.png"), "--out", str(out), "--param", "25") == 1
    )
    err = capsys.readouterr().err
    assert f"skipped {fifo}: not a regular file" in err and "no such file" not in err
    assert "1 written, 0 skipped (outputs exist), 1 failed" in err and (out / "a.png").is_file()
    pattern = str(tmp_path / "in" / "[ax].png")
    assert _main(checkpoint, pattern, "--out", str(out), "--param", "25", "--overwrite") == 1
    err = capsys.readouterr().err
    assert "x.png: a folder named like an image, not an image file" in err and "1 written" in err
    assert _main(checkpoint, str(fifo), "--out", str(out), "--param", "25") == 2  # nothing else to do
    err = capsys.readouterr().err
    assert "no images found" in err and "not a regular file" in err and len(err.splitlines()) == 1


def test_an_out_folder_that_cannot_be_written_is_one_usage_error(
    identity: DenoiserModule,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("a", "b", "c"):
        _png(tmp_path / "in" / f"{name}.png", (20, 20, 3))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes through permissions: fail the probe the way a read-only folder would

        def refuse(*_args: object, **_kw: object) -> tuple[int, str]:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    status = _main(checkpoint, str(tmp_path / "in"), "--out", str(locked / "sub"), "--param", "25")
    err = capsys.readouterr().err
    assert status == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"python -m ssdn.denoise: error: --out {locked / 'sub'}: cannot write there")
    assert "Permission denied" in err and not (locked / "sub").exists()
    file_in_the_way = tmp_path / "file"
    file_in_the_way.write_text("x")
    monkeypatch.undo()
    assert (
        _main(checkpoint, str(tmp_path / "in"), "--out", str(file_in_the_way / "sub"), "--param", "25") == 2
    )


def test_param_given_to_a_learned_level_model_is_used_and_said(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_config(*TINY, "noise_params=sigma_global", output_dir=tmp_path)
    module = DenoiserModule(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)).eval()
    monkeypatch.setattr(denoise, "load_denoiser", lambda *_args, **_kw: module)
    _png(tmp_path / "x.png", (32, 32, 3))
    args = [str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]
    assert _main(checkpoint, *args) == 0  # its learned level (about 4.9 at initialisation)
    learned = module.noise.to_params(
        module.method.level(torch.zeros(1, 3, 32, 32), torch.zeros(0), module.noise)
    )
    assert float(capsys.readouterr().out.split("sigma=")[1].split()[0]) == pytest.approx(
        float(learned), rel=1e-5
    )
    assert _main(checkpoint, *args, "--param", "25", "--overwrite") == 0
    captured = capsys.readouterr()
    assert float(captured.out.split("sigma=")[1].split()[0]) == pytest.approx(25.0, rel=1e-9)
    assert "this model learned its noise level (global); using the level given instead" in captured.err


@pytest.mark.parametrize(("flags", "expected"), [({"avx2", "avx512_bf16"}, True), ({"avx2"}, False)])
def test_precision_auto_follows_the_cpu_flags(
    identity: DenoiserModule,
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: set[str],
    expected: bool,
) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    _png(tmp_path / "x.png", (20, 20, 3))
    args = [str(tmp_path / "x.png"), "--param", "25", "--overwrite", "--out", str(tmp_path / "o")]
    assert _main(checkpoint, *args) == 0
    assert _main(checkpoint, *args, "--precision", "fp32") == 0
    assert _main(checkpoint, *args, "--precision", "bf16") == 0
    assert identity.asked_bf16 == [expected, False, True]  # type: ignore[attr-defined]
    assert network_bf16("auto", "cuda", frozenset()) and not network_bf16("auto", "cpu", frozenset())


def test_a_photo_keeps_its_exif_and_colour_profile_upright(
    identity: DenoiserModule, checkpoint: Path, tmp_path: Path
) -> None:
    """A camera JPEG stored sideways (EXIF orientation 6) is denoised upright and written with its EXIF (camera,
    exposure; orientation now 1) and ICC profile, so every viewer shows it as the original was shown."""
    from PIL import ImageCms

    stored = np.random.default_rng(7).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x010F] = "ssdn-camera"
    exif.get_ifd(0x8769)[0x829A] = (1, 250)  # ExposureTime, in the Exif sub-directory
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    (tmp_path / "in").mkdir()
    Image.fromarray(stored).save(tmp_path / "in" / "photo.jpg", quality=95, exif=exif, icc_profile=icc)
    upright = load_native(tmp_path / "in" / "photo.jpg")
    assert upright.shape == (40, 24, 3)
    out = tmp_path / "out"
    assert _main(checkpoint, str(tmp_path / "in"), "--out", str(out), "--param", "25") == 0
    with Image.open(out / "photo.png") as result:
        written = result.getexif()
        assert result.info.get("icc_profile") == icc
        assert np.array_equal(np.asarray(result.convert("RGB")), upright)  # identity denoiser: pixels as read
    assert written[0x0112] == 1 and written[0x010F] == "ssdn-camera"
    with Image.open(tmp_path / "in" / "photo.jpg") as original:
        exposure = original.getexif().get_ifd(0x8769)[0x829A]
    assert written.get_ifd(0x8769)[0x829A] == exposure
    # A file without metadata gets none, and a TIFF keeps its ICC profile.
    tifffile.imwrite(tmp_path / "in" / "plain.tif", stored, photometric="rgb", iccprofile=icc)
    _png(tmp_path / "in" / "bare.png", (8, 8, 3))
    assert _main(checkpoint, str(tmp_path / "in"), "--out", str(out), "--param", "25", "--skip-existing") == 0
    with tifffile.TiffFile(out / "plain.tif") as tif:
        assert bytes(tif.pages.first.tags["InterColorProfile"].value) == icc
    with Image.open(out / "bare.png") as bare:
        assert not bare.getexif() and "icc_profile" not in bare.info


def test_blind_hole_is_used_for_every_image_and_bad_values_are_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--blind-hole 3 on the paper's net (trained with hole 1) changes the output as the module's own hole
    does; 2 and 13 are refused before any image is read, naming the option."""
    _png(tmp_path / "in" / "a.png", (64, 64, 3))
    outs = {}
    for hole in (None, 3):
        flag = ["--precision", "fp32", *([] if hole is None else ["--blind-hole", str(hole)])]
        dest = tmp_path / f"out{hole}"
        assert _main(checkpoint, str(tmp_path / "in"), "--out", str(dest), "--param", "25", *flag) == 0
        outs[hole] = np.asarray(Image.open(dest / "a.png"))
    module = denoise.load_denoiser(checkpoint)
    noisy = torch.from_numpy(np.asarray(Image.open(tmp_path / "in" / "a.png"))).permute(2, 0, 1)[None] / 255.0
    module.infer_hole = 3
    expected = module.denoise(noisy.float(), torch.full((1,), 25.0, dtype=torch.float64))["pme"]
    assert np.array_equal(outs[3], (expected[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())
    assert not np.array_equal(outs[3], outs[None])
    for bad in ("2", "13"):
        dest = tmp_path / f"bad{bad}"
        assert (
            _main(checkpoint, str(tmp_path / "in"), "--out", str(dest), "--param", "25", "--blind-hole", bad)
            == 2
        )
        err = capsys.readouterr().err
        assert f"--blind-hole {bad}: blind_hole must" in err and "Traceback" not in err, err
        assert not (dest / "a.png").exists()
