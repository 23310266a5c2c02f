"""Crops from packed sets: the same stream as image folders (ids, epochs, corners), memory-mapped reads,
worker/rank disjointness, exact resume, and clear errors for unfinished sets."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ssdn.config.schema import DataSettings
from ssdn.data.crops import RandomCropStream
from ssdn.data.datamodule import DenoisingDataModule
from ssdn.data.io import load_image
from ssdn.data.packed import PLAN, PackedSet, PackedSetError
from ssdn.noise import build_noise
from ssdn.prepare import pack

SIZES = [(48, 40), (64, 64), (40, 56), (80, 48), (52, 44), (60, 72), (44, 44), (70, 40)]


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    """Eight random images (one grayscale), each in its own folder, packed in shuffled order."""
    src = tmp_path / "src"
    for i, (w, h) in enumerate(SIZES):
        rng = np.random.default_rng(i)
        (src / f"d{i}").mkdir(parents=True)
        pixels = rng.integers(0, 256, (h, w) if i == 3 else (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / f"d{i}" / "image.png")
    pack(src, tmp_path / "packed", min_size=16, max_size=128, shard_size=3, seed=5)
    return tmp_path / "packed"


def folders_in_packed_order(packed: Path) -> list[Path]:
    """Image folders listed in the packed order: a folder source over exactly the same files."""
    return [p.parent for p in PackedSet(packed).paths]


def take(stream: RandomCropStream, n: int, workers: int = 0) -> list[dict[str, torch.Tensor]]:
    it = iter(DataLoader(stream, batch_size=None, num_workers=workers))
    return [next(it) for _ in range(n)]


def assert_same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"rotate_aug": True},
        {"channels": 1},
        {"fixed_noise": True},
    ],
    ids=["plain", "rotate", "mono", "fixed_noise"],
)
def test_same_batches_as_the_folders_in_packed_order(packed: Path, options: dict) -> None:
    kw = dict(crop_size=32, batch_size=5, seed=3, **options)
    noise = build_noise("gaussian", [5, 50])
    from_pack = RandomCropStream(DataSettings(packed, **kw), noise=noise)
    from_folders = RandomCropStream(DataSettings(folders_in_packed_order(packed), **kw), noise=noise)
    assert from_pack.files == from_folders.files
    assert_same([from_pack.batch(b) for b in range(6)], [from_folders.batch(b) for b in range(6)])


def test_crops_are_windows_read_through_the_memory_map(packed: Path) -> None:
    stream = RandomCropStream(DataSettings(packed, crop_size=40, batch_size=4, seed=1))
    view = stream._pack.image(0)
    assert isinstance(view.base, np.memmap) and not view.flags.writeable  # a view of the shard: no decode
    for b in range(3):
        out = stream.batch(b)
        assert out["clean"].dtype == torch.uint8 and out["clean"].shape == (4, 3, 40, 40)
        assert out["clean"].is_contiguous()
        for crop, i in zip(out["clean"].permute(0, 2, 3, 1).numpy(), out["index"].tolist(), strict=True):
            image = load_image(stream.files[i])
            assert any(
                np.array_equal(image[t : t + 40, l : l + 40], crop)
                for t in range(image.shape[0] - 39)
                for l in range(image.shape[1] - 39)
            )
    assert len(pickle.dumps(stream)) < 50_000  # the shards are mapped again by each worker, never pickled


def test_determinism_and_seed(packed: Path) -> None:
    a = [
        RandomCropStream(DataSettings(packed, crop_size=32, batch_size=3, seed=4)).batch(b) for b in range(4)
    ]
    assert_same(
        a,
        [
            RandomCropStream(DataSettings(packed, crop_size=32, batch_size=3, seed=4)).batch(b)
            for b in range(4)
        ],
    )
    other = [
        RandomCropStream(DataSettings(packed, crop_size=32, batch_size=3, seed=9)).batch(b) for b in range(4)
    ]
    assert not all(torch.equal(x["clean"], y["clean"]) for x, y in zip(a, other, strict=True))
    epoch = RandomCropStream(DataSettings(packed, crop_size=32, batch_size=8, seed=4))
    assert sorted(epoch.batch(0)["index"].tolist()) == list(range(8))  # every image once per epoch


def test_workers_ranks_and_resume(packed: Path) -> None:
    single = RandomCropStream(DataSettings(packed, crop_size=32, batch_size=4, seed=2))
    ref = [single.batch(b) for b in range(6)]
    assert_same(ref, take(single, 6, workers=2))  # worker w builds batches w, w + 2, ...: same sequence

    ranks = [
        RandomCropStream(DataSettings(packed, crop_size=32, batch_size=4, seed=2), rank=r, world_size=2)
        for r in (0, 1)
    ]
    for b in range(6):
        parts = [r.batch(b) for r in ranks]
        assert all(torch.equal(torch.cat([p[k] for p in parts]), ref[b][k]) for k in ref[b])
    ids = [set(r.sample_ids(b).tolist()) for r in ranks for b in range(6)]
    assert sum(map(len, ids)) == len(set().union(*ids)) == 24  # no sample on two ranks or in two batches

    resumed = RandomCropStream(DataSettings(packed, crop_size=32, batch_size=4, seed=2), start_batch=3)
    assert_same(ref[3:], take(resumed, 3, workers=2))
    ranks[1].start_batch = 4
    assert_same([ranks[1].batch(4), ranks[1].batch(5)], take(ranks[1], 2, workers=2))


def test_size_filter_subset_and_small_images_use_the_index(packed: Path) -> None:
    with pytest.warns(UserWarning, match=r"skipped 3 image\(s\) smaller than crop_size=44"):
        big = RandomCropStream(DataSettings(packed, crop_size=44, batch_size=2))
    assert len(big.files) == 5 and len(big.too_small_files) == 3
    sub = RandomCropStream(DataSettings(packed, crop_size=32, subset=3, subset_seed=1))
    assert len(sub.files) == 3 and set(sub.files) <= set(PackedSet(packed).paths)
    assert sub.describe()["packed"]["counts"]["kept"] == 8
    with pytest.raises(ValueError, match="8 fall outside the size filter"):
        RandomCropStream(
            DataSettings(packed, crop_size=32, size_filter=True)
        )  # 256..512: none of the tiny images


def test_unfinished_or_misused_sets_fail_clearly(packed: Path, tmp_path: Path) -> None:
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / PLAN).write_text("{}")
    with pytest.raises(PackedSetError, match=r"train_dir: .*unfinished packed set \(no manifest.json\)"):
        RandomCropStream(DataSettings(unfinished, crop_size=32))
    with pytest.raises(ValueError, match="is a packed set and must be the only train_dir entry"):
        RandomCropStream(DataSettings([packed, tmp_path / "src" / "d0"], crop_size=32))
    dm = DenoisingDataModule(
        DataSettings(train_dir=str(packed), val_dir=str(packed), crop_size=32, val_size=32)
    )
    dm.set_noise(build_noise("gaussian", 25))
    with pytest.raises(ValueError, match=r"val_dir: .* is a packed training set"):
        dm.setup("fit")


def test_datamodule_trains_from_a_packed_set(packed: Path, tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    Image.new("RGB", (40, 40), (90, 20, 30)).save(tmp_path / "val" / "v.png")
    dm = DenoisingDataModule(
        DataSettings(
            train_dir=str(packed),
            val_dir=str(tmp_path / "val"),
            crop_size=32,
            batch_size=4,
            val_size=32,
            val_count=1,
            num_workers=1,
        ),
        noise=build_noise("gaussian", 25),
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["clean"].shape == (4, 3, 32, 32)
    assert dm.state_dict()["train"]["packed"]["root"] == str(packed)
    assert len(dm.train_files) == 8
