"""ssdn.prepare: the authors' order and size filter, RGB pixels, records, atomic and resumable writing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ssdn.prepare as prepare
from ssdn.config.schema import DataSettings
from ssdn.data.crops import RandomCropStream
from ssdn.data.io import list_images, load_image
from ssdn.data.packed import MANIFEST, PackedSet, PackedSetError
from ssdn.prepare import PrepareError, main, pack

# Small stand-ins for the paper's 256..512 window, so that the test images stay tiny.
LO, HI = 32, 64
SETTINGS = {"min_size": LO, "max_size": HI, "shard_size": 3}


def save(path: Path, w: int, h: int, seed: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """Ten usable images in a tree (one grayscale), two outside the window, two undecodable files."""
    root = tmp_path / "src"
    sizes = [(LO, LO), (HI, 40), (40, HI), (48, 36), (36, 48), (60, 60), (33, 50), (64, 64), (50, 33)]
    for i, (w, h) in enumerate(sizes):
        save(root / f"class{i % 3}" / f"im{i}.png", w, h, seed=i)
    save(root / "class0" / "gray.png", 40, 40, seed=20, mode="L")
    save(root / "class1" / "too_big.png", HI + 1, 40, seed=21)
    save(root / "too_small.png", 40, LO - 1, seed=22)
    (root / "class2" / "garbage.png").write_bytes(b"not an image at all")
    save(root / "class2" / "cut.png", 40, 40, seed=23)
    data = (root / "class2" / "cut.png").read_bytes()
    (root / "class2" / "cut.png").write_bytes(data[:80])  # header intact, pixels cut off
    return root


def expected_order(src: Path, seed: int) -> list[str]:
    """The authors' tool: sorted listing, shuffled with RandomState(seed), then the size filter."""
    files = [p.relative_to(src).as_posix() for p in list_images(src, recursive=True)]
    np.random.RandomState(seed).shuffle(files)
    keep = []
    for rel in files:
        try:
            w, h = Image.open(src / rel).size
        except OSError:
            continue
        if LO <= w <= HI and LO <= h <= HI and rel != "class2/cut.png":
            keep.append(rel)
    return keep


def test_order_filter_pixels_and_records(src: Path, tmp_path: Path) -> None:
    manifest = pack(src, tmp_path / "out", seed=7, **SETTINGS)
    assert [e["path"] for e in manifest["images"]] == expected_order(src, 7)
    assert manifest["counts"] == {"listed": 14, "filtered": 2, "kept": 10, "undecodable": 2}
    assert {e["path"] for e in manifest["undecodable"]} == {"class2/garbage.png", "class2/cut.png"}
    assert manifest["settings"]["seed"] == 7 and manifest["version"] == 1
    assert len(manifest["shards"]) == 4 and sum(s["images"] for s in manifest["shards"]) == 10  # 11 planned

    packed = PackedSet(tmp_path / "out")
    packed.verify()
    assert len(packed) == 10
    for i, entry in enumerate(manifest["images"]):
        file = src / entry["path"]
        assert np.array_equal(packed.image(i), load_image(file, 3))  # grayscale comes back tiled to RGB
        assert entry["bytes"] == file.stat().st_size and len(entry["sha256"]) == 64
    index = np.load(tmp_path / "out" / "index.npy")
    assert index.dtype == np.int64 and index.shape == (10, 4)
    assert index[:, 2:].tolist() == [[e["height"], e["width"]] for e in manifest["images"]]


def test_default_seed_is_the_authors(src: Path, tmp_path: Path) -> None:
    manifest = pack(src, tmp_path / "out", **SETTINGS)
    assert manifest["settings"]["seed"] == 0xBADF00D
    assert [e["path"] for e in manifest["images"]] == expected_order(src, 0xBADF00D)


def test_worker_processes_write_the_same_set(src: Path, tmp_path: Path) -> None:
    one = pack(src, tmp_path / "one", **SETTINGS, workers=1)
    two = pack(src, tmp_path / "two", **SETTINGS, workers=2)
    assert one == two
    for shard in one["shards"]:
        a, b = (tmp_path / d / "shards" / shard["file"] for d in ("one", "two"))
        assert a.read_bytes() == b.read_bytes()


def test_interrupted_run_leaves_no_set_and_resumes(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = pack(src, tmp_path / "ref", **SETTINGS)
    out = tmp_path / "out"
    victim = reference["images"][4]["path"]  # in the second shard
    decode = prepare._decode
    decoded: list[str] = []

    def crash(job: tuple[str, str]) -> tuple:
        if job[1] == victim:
            raise KeyboardInterrupt
        decoded.append(job[1])
        return decode(job)

    monkeypatch.setattr(prepare, "_decode", crash)
    with pytest.raises(KeyboardInterrupt):
        pack(src, out, **SETTINGS)
    assert not (out / MANIFEST).exists()
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00000.bin", "shard-00000.json"]
    with pytest.raises(PackedSetError, match=r"unfinished packed set .* Re-run `python -m ssdn.prepare"):
        PackedSet(out)
    with pytest.raises(PackedSetError, match="unfinished packed set"):
        RandomCropStream(DataSettings(out, crop_size=32))

    victim = ""
    decoded.clear()
    assert pack(src, out, **SETTINGS) == reference
    first_shard = {e["path"] for e in reference["images"][:3]}
    assert decoded and first_shard.isdisjoint(decoded)  # the finished shard was verified, not rebuilt
    for shard in reference["shards"]:
        assert (out / "shards" / shard["file"]).read_bytes() == (
            tmp_path / "ref" / "shards" / shard["file"]
        ).read_bytes()


def test_damaged_shards_are_refused_and_rebuilt(
    src: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    reference = pack(src, out, **SETTINGS)
    shard = out / "shards" / "shard-00001.bin"
    data = bytearray(shard.read_bytes())
    data[5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(PackedSetError, match=r"shard-00001\.bin does not match its sha256"):
        PackedSet(out).verify()
    with caplog.at_level(logging.WARNING, logger="ssdn.prepare"):
        assert pack(src, out, **SETTINGS) == reference
    assert "shard 1: shard-00001.bin does not match its record; rebuilding it" in caplog.text
    PackedSet(out).verify()

    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(PackedSetError, match=r"shard-00001.bin is \d+ bytes, the manifest says \d+ bytes"):
        PackedSet(out)
    assert pack(src, out, **SETTINGS) == reference
    (out / "shards" / "shard-00002.bin").unlink()
    with pytest.raises(PackedSetError, match=r"shard-00002\.bin is missing"):
        PackedSet(out)
    assert pack(src, out, **SETTINGS) == reference


def test_refuses_to_mix_plans_or_overwrite_other_folders(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    pack(src, out, **SETTINGS)
    with pytest.raises(PrepareError, match=r"started with another plan: settings differ \(seed\)"):
        pack(src, out, **SETTINGS, seed=1)
    save(src / "class0" / "new.png", 40, 40, seed=30)
    with pytest.raises(PrepareError, match="started with another plan: the source listing differs"):
        pack(src, out, **SETTINGS)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(PrepareError, match="not empty and holds no packed set"):
        pack(src, other, **SETTINGS)
    with pytest.raises(PrepareError, match="is inside SRC"):
        pack(src, src / "packed", **SETTINGS)
    with pytest.raises(PrepareError, match="none of the 15 image files"):
        pack(src, tmp_path / "none", min_size=500, max_size=600)
    with pytest.raises(PrepareError, match=r"SRC=.* is not a folder"):
        pack(tmp_path / "nowhere", tmp_path / "x")


def test_command_line(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = [
        str(src),
        str(out),
        "--min-size",
        str(LO),
        "--max-size",
        str(HI),
        "--seed",
        "0x2a",
        "--shard-size",
        "4",
    ]
    assert main(argv) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["settings"] == {
        "min_size": LO,
        "max_size": HI,
        "seed": 42,
        "shard_size": 4,
        "channels": 3,
    }
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[:6], "--seed", "3"])
    assert exit_info.value.code == 2
    assert "ssdn-prepare: error: OUT=" in capsys.readouterr().err


def test_imagenet_sample_headers_agree_with_sizes_tsv(data_root: Path, tmp_path: Path) -> None:
    """Forty real ImageNet photos (symlinked, not copied): the filter agrees with the shared sizes table."""
    folder = data_root / "train-imagenet-sample-1000"
    if not folder.is_dir():
        pytest.skip("train-imagenet-sample-1000 not present")
    rows = [line.split("\t") for line in (folder / "sizes.tsv").read_text().splitlines()[1:]]
    inside = {r[0] for r in rows if 256 <= int(r[1]) <= 512 and 256 <= int(r[2]) <= 512}
    gray = [r for r in rows if r[3] == "L" and r[0] in inside][:5]
    rows = gray + [r for r in rows if r[3] != "L"][:35]
    inside &= {r[0] for r in rows}
    src = tmp_path / "src"
    src.mkdir()
    for r in rows:
        (src / r[0]).symlink_to(folder / r[0])
    manifest = pack(src, tmp_path / "out", shard_size=16)
    assert {e["path"] for e in manifest["images"]} == inside
    assert manifest["counts"]["filtered"] == len(rows) - len(inside)
    packed = PackedSet(tmp_path / "out")
    assert gray
    for i, entry in enumerate(manifest["images"]):
        if entry["path"] in {r[0] for r in gray}:
            image = packed.image(i)
            assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(
                image[..., 0], image[..., 2]
            )
