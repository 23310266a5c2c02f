"""ssdn.data.testsets: the registry, lookup of the data root, verification and clear errors."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssdn.data import testsets
from ssdn.data.testsets import (
    DATA_ROOT_ENV,
    TestSetIntegrityError,
    TestSetNotFoundError,
    get_testset,
    load_testset,
    resolve_root,
    testset_names,
    testset_paths,
)


def _link_set(data_root: Path, tmp_root: Path, folder: str) -> Path:
    """A copy of a set made of symlinks (nothing is copied), to break one file at a time."""
    dst = tmp_root / folder
    dst.mkdir(parents=True)
    for src in (data_root / folder).iterdir():
        (dst / src.name).symlink_to(src)
    return dst


def test_registry_contents() -> None:
    assert testset_names() == ["kodak", "bsd300", "set14", "set14_12"]
    counts = {n: len(get_testset(n).files) for n in testset_names()}
    assert counts == {"kodak": 24, "bsd300": 100, "set14": 14, "set14_12": 12}
    assert {n: get_testset(n).repeats for n in testset_names()} == {
        "kodak": 10,
        "bsd300": 3,
        "set14": 20,
        "set14_12": 20,
    }
    for n in testset_names():
        names = [f.name for f in get_testset(n).files]
        assert names == sorted(names)
        assert all(len(f.sha256) == 64 and f.bytes > 0 for f in get_testset(n).files)
        assert all("{name}" in s for s in get_testset(n).sources)
    s12 = {f.name for f in get_testset("set14_12").files}
    assert {f.name for f in get_testset("set14").files} - s12 == {"bridge.png", "man.png"}
    assert get_testset("SET14-12").name == "set14_12"
    with pytest.raises(KeyError, match="known sets"):
        get_testset("mcmaster")


def test_registry_matches_shared_checksums(data_root: Path) -> None:
    for name in ("kodak", "bsd300", "set14"):
        spec = get_testset(name)
        sums = dict(
            reversed(line.split())
            for line in (data_root / spec.folder / "SHA256SUMS").read_text().splitlines()
        )
        assert {f.name: f.sha256 for f in spec.files} == sums
        assert all((data_root / spec.folder / f.name).stat().st_size == f.bytes for f in spec.files)


def test_load_kodak_verified(data_root: Path) -> None:
    images = load_testset("kodak", root=data_root, verify=True)
    assert [im.name for im in images] == [f"kodim{i:02d}.png" for i in range(1, 25)]
    assert all(im.pixels.dtype == np.uint8 and im.pixels.shape[2] == 3 for im in images)
    assert images[3].pixels.shape == (768, 512, 3)  # kodim04 is portrait
    assert len(load_testset("kodak", root=data_root, limit=2)) == 2


def test_set14_grayscale_and_mono(data_root: Path) -> None:
    images = {im.name: im.pixels for im in load_testset("set14", root=data_root)}
    bridge = images["bridge.png"]
    assert bridge.shape == (512, 512, 3)
    assert np.array_equal(bridge[..., 0], bridge[..., 1]) and np.array_equal(bridge[..., 0], bridge[..., 2])
    mono = load_testset("set14_12", root=data_root, channels=1)
    assert len(mono) == 12 and all(im.pixels.shape[2] == 1 for im in mono)
    assert "man.png" not in {im.name for im in mono}


def test_bsd300_paths_from_env(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(data_root))
    assert resolve_root() == data_root
    paths = testset_paths("bsd300", verify=True)
    assert len(paths) == 100 and paths[0].name == "101085.jpg"
    monkeypatch.delenv(DATA_ROOT_ENV)
    assert resolve_root() == Path("data")


def test_missing_set_names_set_folder_and_command(tmp_path: Path) -> None:
    with pytest.raises(TestSetNotFoundError) as info:
        load_testset("bsd300", root=tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "'bsd300'" in msg and str(tmp_path / "bsd300") in msg
    assert f"python -m ssdn.data.download bsd300 --root {tmp_path}" in msg


def test_missing_file_and_checksum_mismatch(data_root: Path, tmp_path: Path) -> None:
    folder = _link_set(data_root, tmp_path, "set14")
    (folder / "zebra.png").unlink()
    with pytest.raises(TestSetNotFoundError, match=r"1 file\(s\) missing: zebra\.png"):
        testset_paths("set14", root=tmp_path)

    (folder / "zebra.png").symlink_to(data_root / "set14" / "zebra.png")
    broken = folder / "face.png"
    data = bytearray(broken.read_bytes())
    broken.unlink()
    data[-20] ^= 0xFF
    broken.write_bytes(bytes(data))
    assert len(testset_paths("set14", root=tmp_path)) == 14  # presence only without verify
    with pytest.raises(TestSetIntegrityError, match=r"face\.png has sha256"):
        testset_paths("set14", root=tmp_path, verify=True)


def test_wrong_pixel_size_detected_without_verify(data_root: Path, tmp_path: Path) -> None:
    folder = _link_set(data_root, tmp_path, "set14")
    os.unlink(folder / "baboon.png")
    Image.new("RGB", (10, 10)).save(folder / "baboon.png")
    with pytest.raises(TestSetIntegrityError, match=r"baboon\.png decodes to 10x10, expected 500x480"):
        load_testset("set14", root=tmp_path, limit=1, verify=False)


def test_modified_file_refused_before_scoring_unless_allowed(data_root: Path, tmp_path: Path) -> None:
    folder = _link_set(data_root, tmp_path, "set14")
    target = folder / "baboon.png"
    pixels = np.array(Image.open(target))
    target.unlink()
    pixels[0, 0] ^= 1  # one pixel a little off: a silently different set
    Image.fromarray(pixels).save(target)
    data = target.read_bytes()
    with pytest.raises(TestSetIntegrityError, match=r"baboon\.png has sha256 .*--allow-modified"):
        load_testset("set14", root=tmp_path, limit=1)
    with pytest.warns(UserWarning, match=r"baboon\.png has sha256 .*scored anyway"):
        (image,) = load_testset("set14", root=tmp_path, limit=1, allow_modified=True)
    assert (
        image.sha256 == hashlib.sha256(data).hexdigest()
        and image.pixels[0, 0].tolist() == pixels[0, 0].tolist()
    )


def test_files_are_hashed_once_per_process_until_they_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(testsets, "sha256_file", lambda p: calls.append(p) or "h")
    path = tmp_path / "f.png"
    path.write_bytes(b"abc")
    assert testsets.file_sha256(path) == testsets.file_sha256(path) == "h" and len(calls) == 1
    os.utime(path, ns=(0, 12345))
    testsets.file_sha256(path)
    assert len(calls) == 2


class _Identity:
    """The smallest denoiser: returns its input."""

    name = "identity"
    requires_square_multiple = None

    def denoise(self, noisy: torch.Tensor, params: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": noisy}


def test_results_record_the_checksums_of_what_was_scored(data_root: Path, tmp_path: Path) -> None:
    from ssdn.eval.evaluator import evaluate, write_results
    from ssdn.eval.protocol import protocol_configs
    from ssdn.eval.settings import EvalSettings

    configs = protocol_configs({"sets": ["kodak"], "repeats": 1, "limit": 2, "crop": 32}, ("gaussian", 25), 3)
    results = evaluate(_Identity(), configs, EvalSettings(root=data_root, progress=False))
    write_results(results, tmp_path)
    recorded = json.loads((tmp_path / "results.json").read_text())["sets"]["kodak"]["sha256"]
    spec = {f.name: f.sha256 for f in get_testset("kodak").files}
    assert recorded == {n: spec[n] for n in ("kodim01.png", "kodim02.png")}
