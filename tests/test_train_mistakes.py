"""Training mistakes, made through the command line as a user would: each is one line ``ssdn-train: error: ...``
naming the file or setting and what to do, exit status 2, and no traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssdn.config.run import plain
from tests.cli_subprocess import TINY_CLI, clean_env
from tests.conftest import compose_config

#: Runs that fail before training spends a step; a run that trains is 2 steps of 32² crops.
FOLDER = (*TINY_CLI, "data=folder", "data.val_dir=null", "data.size_filter=false", "data.val_size=32")

#: Enough of ssdn.train's stderr to judge it, when an assertion fails.
TAIL = 3000


def _run(*args: str, cwd: Path, code: str | None = None) -> tuple[int, str]:
    """``python -m ssdn.train ARGS``, or ``ssdn.train.main()`` under ARGS after ``code`` ran in the child."""
    command = (
        [sys.executable, "-m", "ssdn.train", *args]
        if code is None
        else [
            sys.executable,
            "-c",
            f"{code}\nimport sys\nfrom ssdn.train import main\nsys.argv[1:] = {args!r}\nmain()",
        ]
    )
    proc = subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stderr


def _one_line_error(code: int, err: str) -> str:
    """The error line, after checking it is the only one of its kind, with status 2 and no traceback."""
    assert code == 2, err[-TAIL:]
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err, err[-TAIL:]
    lines = [line for line in err.splitlines() if line.startswith("ssdn-train: error: ")]
    assert len(lines) == 1, err[-TAIL:]
    assert err.rstrip().endswith(lines[0]), err[-TAIL:]  # nothing after it (Hydra's own report, say)
    return lines[0]


def _images(folder: Path, sizes: list[tuple[int, int]], dtype: type = np.uint8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        if dtype is np.uint8:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
        else:
            Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16)).save(folder / f"im{i}_16.png")
    return folder


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "data.crop_size=abc",
            r"data\.crop_size=abc: Value 'abc' of type 'str' could not be converted to Integer; give data\.crop_size",
        ),
        (
            "method=nonexistent",
            r"method=nonexistent: no such method; choose one of anscombe, .*n2n, .*ssdn, ssdn_diag "
            r"\(the files in .*ssdn/conf/method\)",
        ),
        (
            "data.crop_szie=3",
            r"data\.crop_szie: Key 'crop_szie' not in 'DataConfig'; the keys of data are .*crop_size",
        ),
        (
            "trainer.precision=fp13",
            r"trainer\.precision=fp13 is not a precision; choose one of auto, 32-true, ",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_and_the_allowed_values(
    tmp_path: Path, override: str, expected: str
) -> None:
    code, err = _run(*TINY_CLI, override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    line = _one_line_error(code, err)
    assert re.search(expected, line), line


def test_hydra_full_error_still_gives_the_traceback(tmp_path: Path) -> None:
    env = clean_env(HYDRA_FULL_ERROR="1")
    proc = subprocess.run(
        [sys.executable, "-m", "ssdn.train", "method=nonexistent", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "MissingConfigException" in proc.stderr


@pytest.mark.parametrize(
    ("sizes", "extra", "expected"),
    [
        # one image, held out for validation: nothing is left to train on
        (
            [(48, 48)],
            ("data.val_count=1",),
            r"Of 1 file\(s\) found, .* 1 held out for validation \(data\.val_count=1",
        ),
        # as many held out as there are files
        (
            [(48, 48)] * 3,
            ("data.val_count=3",),
            r"Of 3 file\(s\) found, .* 3 held out for validation \(data\.val_count=3; lower it, or give data\.val_dir",
        ),
        # every image smaller than the crop
        (
            [(20, 20)] * 2,
            ("data.val_count=0",),
            r"no usable training image\. Of 2 file\(s\) found, .*2 are smaller",
        ),
    ],
)
def test_no_training_image_left_says_how_many_were_found_and_held_out(
    tmp_path: Path, sizes: list[tuple[int, int]], extra: tuple[str, ...], expected: str
) -> None:
    folder = _images(tmp_path / "noisy", sizes)
    args = (*FOLDER, f"data.train_dir={folder}", "data.add_noise=false", *extra)
    line = _one_line_error(*_run(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path))
    assert "no usable training image" in line
    assert re.search(expected, line), line


def test_mixed_bit_depths_are_one_line(tmp_path: Path) -> None:
    folder = _images(tmp_path / "noisy", [(48, 48)] * 2)
    _images(folder, [(48, 48)], np.uint16)
    args = (*FOLDER, f"data.train_dir={folder}", "data.add_noise=false", "data.val_count=0", "channels=1")
    line = _one_line_error(*_run(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path))
    assert "mix bit depths" in line and "im0.png is 8-bit" in line and "im0_16.png is 16-bit" in line


@pytest.mark.parametrize(
    ("changed", "resume", "named"),
    [
        ("noise=poisson", "auto", "noise.name=gaussian (now poisson), noise.value=25 (now 30)"),
        ("method=n2c", "checkpoints/last.ckpt", "method.blindspot=True (now False)"),
        ("channels=1", "auto", "channels=3 (now 1)"),
    ],
)
def test_resuming_another_model_names_the_differing_keys(
    tmp_path: Path, changed: str, resume: str, named: str
) -> None:
    """A checkpoint of the default run (Gaussian σ=25, the blind-spot method, RGB), resumed (``resume=auto`` or
    by its path) under another setting: refused before anything is trained, naming old and new values."""
    run = tmp_path / "run"
    saved = plain(compose_config(*TINY_CLI, output_dir=run))
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"global_step": 2, "ssdn_config": saved}, ckpt)
    resume = resume if resume == "auto" else str(run / resume)
    line = _one_line_error(
        *_run(*TINY_CLI, changed, f"resume={resume}", f"hydra.run.dir={run}", cwd=tmp_path)
    )
    assert f"resume={resume}: {ckpt} was trained with {named}" in line, line


#: In the child: every torch.save writes into /dev/full, whose writes fail with ENOSPC as a full disk's do.
DISK_FULL = """
import torch
_save = torch.save
def _full(obj, f, *args, **kwargs):
    with open("/dev/full", "wb") as full:
        _save(obj, full, *args, **kwargs)
torch.save = _full
"""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to fail writes with ENOSPC")
def test_a_full_disk_says_so_and_names_the_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    line = _one_line_error(*_run(*TINY_CLI, f"hydra.run.dir={run}", cwd=tmp_path, code=DISK_FULL))
    assert f"{run / 'checkpoints'}/" in line and ".ckpt: No space left on device" in line, line
    assert "resume=auto" in line


#: In the child: the divergence watch calls the run diverged at its first step, with figures to report.
DIVERGED = """
from ssdn.training import divergence
def _diverged(self, loss):
    self.start, self.spread, self.smoothed, self.lowest = 0.5, 0.0, 9.0, 0.25
    return True
divergence.DivergenceWatch.update = _diverged
"""


def test_a_diverged_run_stops_naming_the_learning_rate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    line = _one_line_error(
        *_run(*TINY_CLI, "optim.lr=1e-3", f"hydra.run.dir={run}", cwd=tmp_path, code=DIVERGED)
    )
    assert "training diverged after 2 images: the smoothed train/loss rose to 9, above its start 0.5" in line
    assert "optim.lr=0.001 is too high" in line and "optim.lr=0.0003" in line, line
    assert "train.stop_on_divergence=false" in line, line
    assert not (run / "metrics.json").exists()


def test_stop_on_divergence_false_trains_on(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, err = _run(
        *TINY_CLI, "train.stop_on_divergence=false", f"hydra.run.dir={run}", cwd=tmp_path, code=DIVERGED
    )
    assert code == 0, err[-TAIL:]
    assert (run / "metrics.json").is_file()
