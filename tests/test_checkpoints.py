"""Checkpoints are read weights-only: a crafted file passed to any command is refused by path, and the code
hidden in it never runs (resume=, resume=auto, denoise, evaluate, report)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssdn import denoise, evaluate
from ssdn.report.train_files import train_files_from_checkpoint
from ssdn.train import run
from ssdn.training.checkpoints import CheckpointError, load_denoiser, read_checkpoint
from tests.conftest import TINY, compose_config


class _Payload:
    """Unpickling this runs ``exec``, which writes ``marker``: what an attacker's checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def plant_malicious(path: Path, marker: Path) -> Path:
    """A checkpoint-shaped file (global_step, state_dict, ...) that carries a payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"global_step": 1, "state_dict": {}, "hyper_parameters": {"config": {}}, "x": _Payload(marker)}, path
    )
    return path


def test_payload_runs_when_unpickled_unsafely(tmp_path: Path) -> None:
    """The planted file is a real threat: a plain (unsafe) load runs it. The other tests rely on this."""
    marker = tmp_path / "marker"
    torch.load(plant_malicious(tmp_path / "evil.ckpt", marker), weights_only=False)
    assert marker.read_text() == "pwned"


def test_read_checkpoint_refuses_payload(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    ckpt = plant_malicious(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match="refused to load") as err:
        read_checkpoint(ckpt)
    assert str(ckpt) in str(err.value)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_denoiser(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["path", "auto"])
def test_resume_from_malicious_checkpoint_refused(tmp_path: Path, where: str) -> None:
    marker, out = tmp_path / "marker", tmp_path / "run"
    planted = out / "checkpoints" / "last.ckpt" if where == "auto" else tmp_path / "evil.ckpt"
    plant_malicious(planted, marker)
    resume = "resume=auto" if where == "auto" else f"resume={planted}"
    with pytest.raises(CheckpointError, match="refused to load"):
        run(compose_config(*TINY, resume, output_dir=out))
    assert not marker.exists()


def test_denoise_and_evaluate_refuse_malicious_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    ckpt = plant_malicious(tmp_path / "evil.ckpt", marker)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    with pytest.raises(SystemExit) as exit_info:
        denoise.main([str(ckpt), str(image), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert exit_info.value.code == 2
    assert f"{ckpt}: refused to load" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(
            ["--checkpoint", str(ckpt), "--sets", "kodak", "--out", str(tmp_path / "e"), "--device", "cpu"]
        )
    assert exit_info.value.code == 2
    assert f"{ckpt}: refused to load" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "o").exists() and not (tmp_path / "e").exists()


def test_report_skips_malicious_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    marker = tmp_path / "marker"
    plant_malicious(tmp_path / "job" / "checkpoints" / "last.ckpt", marker)
    assert train_files_from_checkpoint(tmp_path / "job") is None
    assert "refused to load" in caplog.text and not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "list"])
def test_damaged_checkpoint_is_a_named_error(tmp_path: Path, damage: str) -> None:
    good = tmp_path / "good.ckpt"
    torch.save({"global_step": 3, "state_dict": {"w": torch.ones(1000)}}, good)
    bad = tmp_path / "bad.ckpt"
    data = good.read_bytes()
    payloads = {
        "truncated": data[: len(data) // 2],
        "garbage": b"this is not a checkpoint\n" * 40,
        "empty": b"",
    }
    if damage == "list":
        torch.save([1, 2], bad)
    else:
        bad.write_bytes(payloads[damage])
    with pytest.raises(CheckpointError, match=str(bad)):
        read_checkpoint(bad)
    assert read_checkpoint(good)["global_step"] == 3
    assert json.dumps(read_checkpoint(good)["global_step"]) == "3"


class _SystemPayload:
    """A payload through ``os.system``, whose module torch blocks outright (a different refusal than exec's)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("true",)


@pytest.mark.parametrize("payload", ["exec", "os.system", "bare pickle"])
def test_crafted_checkpoint_is_refused_for_safety_without_suggesting_to_disable_it(
    tmp_path: Path, payload: str
) -> None:
    path = tmp_path / "crafted.ckpt"
    if payload == "exec":
        plant_malicious(path, tmp_path / "marker")
    elif payload == "os.system":
        torch.save({"state_dict": {}, "x": _SystemPayload()}, path)
    else:
        path.write_bytes(pickle.dumps({"x": _SystemPayload()}, protocol=2))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    text = str(err.value)
    assert (
        text.startswith(f"{path}: refused to load: it holds objects other than weights")
        and len(text.splitlines()) == 1
    )
    assert "refused for safety" in text
    assert "weights_only" not in text and "truncated" not in text and "trusted source" not in text


def test_a_text_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.ckpt"
    path.write_text("hello, this is text\n")
    with pytest.raises(
        CheckpointError, match=r"notes.ckpt: not a checkpoint \(torch.save writes a zip"
    ) as err:
        read_checkpoint(path)
    assert "(101)" not in str(err.value)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.ckpt: empty, not a checkpoint"):
        read_checkpoint(tmp_path / "empty.ckpt")


def test_a_folder_names_the_checkpoint_inside_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    with pytest.raises(
        CheckpointError, match=r"run is a folder, not a checkpoint; pass the .ckpt file inside"
    ):
        read_checkpoint(run_dir)
    torch.save({"global_step": 1}, run_dir / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(run_dir)
    assert (
        str(err.value)
        == f"{run_dir} is a folder, not a checkpoint; pass {run_dir / 'checkpoints' / 'last.ckpt'}"
    )
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    with pytest.raises(SystemExit) as exit_info:
        denoise.main(
            [str(run_dir), str(image), "--out", str(tmp_path / "o"), "--device", "cpu", "--param", "25"]
        )
    err_text = capsys.readouterr().err
    assert exit_info.value.code == 2 and "is a folder, not a checkpoint; pass" in err_text
    assert len(err_text.splitlines()) == 1 and not (tmp_path / "o").exists()


def test_a_pipe_is_not_a_checkpoint(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.ckpt")
    with pytest.raises(CheckpointError, match=r"pipe\.ckpt is not a regular file"):
        read_checkpoint(tmp_path / "pipe.ckpt")
