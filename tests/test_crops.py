"""The training crop stream: sources, filtering, determinism across workers/ranks/resume, fixed noise."""

from __future__ import annotations

import copy
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ssdn.config.schema import DataSettings
from ssdn.data.crops import SIZE_FILTER, DataWarning, RandomCropStream
from ssdn.data.embedded import SPLITS, embedded_paths, embedded_photos
from ssdn.data.io import load_image
from ssdn.data.sources import DataSourceError, DataSourceNotFoundError, resolve_sources


class StubNoise(torch.nn.Module):
    """Additive Gaussian noise per the ssdn.noise contract (per-image σ in 8-bit units, range [low, high])."""

    def __init__(self, low: float = 5.0, high: float = 50.0, scale: float = 1.0) -> None:
        super().__init__()
        self.low, self.high, self.scale = low, high, scale

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return self.low + (self.high - self.low) * u

    def corrupt(self, x: torch.Tensor, params: torch.Tensor, generator: torch.Generator | None = None):
        sigma = (params.view(-1, 1, 1, 1) / 255).to(x.dtype)
        return x + self.scale * sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)


def random_rgb(path: Path, w: int, h: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def flat_rgb(path: Path, w: int, h: int) -> Path:
    """Cheap to write at any size: only the header matters for the size filter."""
    Image.new("RGB", (w, h), (10, 20, 30)).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Seven random RGB images of assorted sizes (all at least 40 px)."""
    d = tmp_path / "imgs"
    d.mkdir()
    for i, (w, h) in enumerate([(48, 40), (64, 64), (40, 56), (80, 48), (52, 44), (60, 72), (44, 44)]):
        random_rgb(d / f"im{i}.png", w, h, seed=i)
    return d


def batches(stream: RandomCropStream, n: int) -> list[dict[str, torch.Tensor]]:
    it = iter(stream)
    return [next(it) for _ in range(n)]


def assert_same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def find_window(crop: np.ndarray, image: np.ndarray) -> tuple[int, int] | None:
    """(top, left) where ``crop`` (h, w, C) occurs in ``image``, or None."""
    h, w = crop.shape[:2]
    for top in range(image.shape[0] - h + 1):
        for left in range(image.shape[1] - w + 1):
            if np.array_equal(image[top : top + h, left : left + w], crop):
                return top, left
    return None


def test_crops_are_windows_of_the_decoded_images(folder: Path) -> None:
    stream = RandomCropStream(DataSettings(folder, crop_size=32, batch_size=4, seed=3))
    assert [p.name for p in stream.files] == [f"im{i}.png" for i in range(7)]
    for b in batches(stream, 3):
        assert b["clean"].dtype == torch.uint8 and b["clean"].shape == (4, 3, 32, 32)
        assert b["index"].dtype == torch.int64 and b["index"].shape == (4,)
        for crop, i in zip(b["clean"].permute(0, 2, 3, 1).numpy(), b["index"].tolist(), strict=True):
            assert find_window(crop, load_image(stream.files[i])) is not None


def test_odd_formats_flow_through_as_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (40, 48), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "a_gray.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 4), dtype=np.uint8), "RGBA").save(tmp_path / "b_rgba.png")
    Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).quantize(16).save(
        tmp_path / "c_pal.png"
    )
    Image.fromarray(rng.integers(0, 65536, (44, 40), dtype=np.uint16)).save(tmp_path / "d_16bit.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display: stored 64x40 (w x h), decoded 40 wide, 64 high
    Image.fromarray(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)).save(
        tmp_path / "e_exif.jpg", exif=exif
    )

    stream = RandomCropStream(DataSettings(tmp_path, crop_size=40, batch_size=5, seed=0))
    assert len(stream.files) == 5 and not stream.skipped_files and not stream.too_small_files
    b = stream.batch(0)
    assert b["clean"].dtype == torch.uint8 and b["clean"].shape == (5, 3, 40, 40)
    for crop, i in zip(b["clean"].permute(0, 2, 3, 1).numpy(), b["index"].tolist(), strict=True):
        decoded = load_image(stream.files[i], 3)
        assert find_window(crop, decoded) is not None
        if stream.files[i].stem in ("a_gray", "d_16bit"):
            assert np.array_equal(crop[..., 0], crop[..., 1]) and np.array_equal(crop[..., 0], crop[..., 2])
        if stream.files[i].stem == "e_exif":
            assert decoded.shape == (64, 40, 3)
    mono = RandomCropStream(DataSettings(tmp_path, crop_size=40, batch_size=5, channels=1)).batch(0)["clean"]
    assert mono.shape == (5, 1, 40, 40)


def _corrupt_files(folder: Path) -> tuple[Path, Path]:
    (folder / "bad.png").write_bytes(b"this is not an image")
    random_rgb(folder / "trunc.jpg", 64, 64, seed=9)
    data = (folder / "trunc.jpg").read_bytes()
    (folder / "trunc.jpg").write_bytes(data[: len(data) // 2])
    return folder / "bad.png", folder / "trunc.jpg"


def _warnings_naming(rec: list[warnings.WarningMessage], name: str) -> int:
    return sum(name in str(w.message) for w in rec if issubclass(w.category, DataWarning))


def test_undecodable_files_are_skipped_with_one_warning(folder: Path) -> None:
    bad, trunc = _corrupt_files(folder)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        stream = RandomCropStream(DataSettings(folder, crop_size=32, batch_size=4, in_memory=True))
        batches(stream, 10)
    assert _warnings_naming(rec, "bad.png") == 1 and _warnings_naming(rec, "trunc.jpg") == 1
    assert stream.skipped_files == [str(bad), str(trunc)]
    assert len(stream.files) == 7


def test_file_failing_at_crop_time_falls_back_deterministically(folder: Path) -> None:
    _, trunc = _corrupt_files(folder)  # the header of trunc.jpg reads fine; its pixels do not
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        stream = RandomCropStream(DataSettings(folder, crop_size=32, batch_size=4, in_memory=False, seed=1))
        assert stream.skipped_files == [str(folder / "bad.png")] and trunc in stream.files
        got = batches(stream, 8)  # 32 samples over 8 images: trunc.jpg is drawn 4 times
    assert _warnings_naming(rec, "trunc.jpg") == 1
    bad_index = stream.files.index(trunc)
    assert all(bad_index not in b["index"].tolist() for b in got)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = RandomCropStream(DataSettings(folder, crop_size=32, batch_size=4, in_memory=False, seed=1))
        assert_same(got, batches(again, 8))
    # The record in checkpoints lists it as skipped, not as trained on.
    record = stream.describe()
    assert record["crop_failed_files"] == [str(trunc)] and str(trunc) in record["skipped_files"]
    assert str(trunc) not in record["files"] and len(record["files"]) == len(stream.files) - 1


def test_crop_time_failure_in_a_worker_reaches_the_main_record(folder: Path) -> None:
    """A loader worker decodes from its own copy of the stream: the batch that met the failure names it once."""
    _, trunc = _corrupt_files(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main = RandomCropStream(DataSettings(folder, crop_size=32, batch_size=4, in_memory=False, seed=1))
        worker = copy.deepcopy(main)
        got = batches(worker, 8)
    announced = [b["crop_failed"].tolist() for b in got if "crop_failed" in b]
    assert announced == [[main.files.index(trunc)]]
    assert main.describe()["crop_failed_files"] == []
    main.mark_crop_failed(announced[0])
    assert main.describe()["crop_failed_files"] == [str(trunc)]


def test_missing_empty_and_unusable_sources_fail_before_training(tmp_path: Path) -> None:
    # UserErrors: the CLI prints them as one line and exits 2
    with pytest.raises(DataSourceNotFoundError, match=r"train_dir: image folder .*nowhere does not exist"):
        RandomCropStream(DataSettings(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataSourceError, match=r"train_dir: no image files .* in folder .*empty"):
        RandomCropStream(DataSettings(empty))
    with pytest.raises(DataSourceError, match="train_dir is an empty list"):
        RandomCropStream(DataSettings([]))
    small = tmp_path / "small"
    small.mkdir()
    random_rgb(small / "tiny.png", 20, 20)
    with pytest.warns(DataWarning, match=r"smaller than crop_size=32: tiny.png"):
        with pytest.raises(
            DataSourceError, match=r"no usable training image.*1 are smaller than crop_size=32"
        ):
            RandomCropStream(DataSettings(small, crop_size=32))
    (small / "tiny.png").write_bytes(b"garbage")
    with pytest.warns(DataWarning, match="tiny.png"):
        with pytest.raises(ValueError, match="1 could not be decoded"):
            RandomCropStream(DataSettings(small, crop_size=32))


def test_files_held_out_for_validation_are_counted_when_none_is_left(folder: Path) -> None:
    """Noisy training without val_dir holds out val_count files: when that takes every file, the error says how
    many were found and held out, and which settings to change."""
    settings = DataSettings(folder, crop_size=32, add_noise=False, val_dir=None, val_size=32, val_count=7)
    with pytest.raises(
        DataSourceError,
        match=r"no usable training image\. Of 7 file\(s\) found, .*, 7 held out for validation "
        r"\(data\.val_count=7; lower it, or give data\.val_dir a folder of clean images\)",
    ):
        RandomCropStream(settings)
    stream = RandomCropStream(
        DataSettings(folder, crop_size=32, add_noise=False, val_dir=None, val_size=32, val_count=6)
    )
    assert len(stream.held_out) == 6 and len(stream.files) == 1


def test_small_images_skipped_with_a_warning(folder: Path) -> None:
    random_rgb(folder / "zz_small.png", 30, 60)
    with pytest.warns(DataWarning, match=r"skipped 1 image\(s\) smaller than crop_size=32: zz_small.png"):
        stream = RandomCropStream(DataSettings(folder, crop_size=32))
    assert stream.too_small_files == [str(folder / "zz_small.png")] and len(stream.files) == 7


def test_size_filter_keeps_the_papers_window(tmp_path: Path) -> None:
    lo, hi = SIZE_FILTER
    sizes = {"a": (lo, lo), "b": (hi, 300), "c": (hi + 88, 300), "d": (lo - 1, 300), "e": (300, hi + 1)}
    for name, (w, h) in sizes.items():
        flat_rgb(tmp_path / f"{name}.png", w, h)
    kept = RandomCropStream(DataSettings(tmp_path, crop_size=64, size_filter=True, in_memory=False))
    assert [p.stem for p in kept.files] == ["a", "b"] and kept.size_filtered_count == 3
    assert len(RandomCropStream(DataSettings(tmp_path, crop_size=64, in_memory=False)).files) == 5


def test_subset_is_drawn_with_its_seed_nested_and_recorded(tmp_path: Path) -> None:
    for i in range(10):
        flat_rgb(tmp_path / f"{i:02d}.png", 40, 40)
    every = [f"{i:02d}.png" for i in range(10)]
    perm = np.random.default_rng(7).permutation(10)
    s4 = RandomCropStream(DataSettings(tmp_path, crop_size=32, subset=4, subset_seed=7))
    assert [p.name for p in s4.files] == [every[i] for i in sorted(perm[:4])]
    assert s4.describe()["files"] == [str(tmp_path / every[i]) for i in sorted(perm[:4])]
    assert s4.describe()["subset"] == 4 and s4.describe()["subset_seed"] == 7
    s2 = RandomCropStream(DataSettings(tmp_path, crop_size=32, subset=2, subset_seed=7))
    assert set(s2.files) <= set(s4.files)
    other = RandomCropStream(DataSettings(tmp_path, crop_size=32, subset=4, subset_seed=8))
    assert other.files != s4.files
    with pytest.raises(ValueError, match="subset=11 asks for more images than the 10 usable"):
        RandomCropStream(DataSettings(tmp_path, crop_size=32, subset=11))


def test_subset_skips_undecodable_files_and_still_fills(tmp_path: Path) -> None:
    for i in range(6):
        flat_rgb(tmp_path / f"{i}.png", 40, 40)
    first = tmp_path / f"{np.random.default_rng(0).permutation(6)[0]}.png"  # the subset's first pick
    first.write_bytes(first.read_bytes()[:60])  # header intact, pixel data cut off
    with pytest.warns(DataWarning, match="skipping undecodable image"):
        s = RandomCropStream(DataSettings(tmp_path, crop_size=32, subset=3, subset_seed=0, in_memory=True))
    assert len(s.files) == 3 and len(s.skipped_files) == 1 and s.skipped_files[0] not in map(str, s.files)


def test_same_seed_same_batches_other_seed_other_batches(folder: Path) -> None:
    a = batches(RandomCropStream(DataSettings(folder, crop_size=32, batch_size=3, seed=5)), 5)
    assert_same(a, batches(RandomCropStream(DataSettings(folder, crop_size=32, batch_size=3, seed=5)), 5))
    b = batches(RandomCropStream(DataSettings(folder, crop_size=32, batch_size=3, seed=6)), 5)
    assert not all(torch.equal(x["clean"], y["clean"]) for x, y in zip(a, b, strict=True))


def test_every_image_once_per_epoch(folder: Path) -> None:
    stream = RandomCropStream(DataSettings(folder, crop_size=32, batch_size=7, seed=2))
    orders = [stream.batch(b)["index"].tolist() for b in range(3)]
    assert all(sorted(o) == list(range(7)) for o in orders)
    assert len({tuple(o) for o in orders}) == 3  # a fresh shuffle every epoch


def test_in_memory_and_on_demand_give_identical_batches(folder: Path) -> None:
    on = batches(RandomCropStream(DataSettings(folder, crop_size=32, batch_size=4, in_memory=True)), 4)
    assert_same(
        on, batches(RandomCropStream(DataSettings(folder, crop_size=32, batch_size=4, in_memory=False)), 4)
    )


def test_num_workers_does_not_change_the_batch_sequence(folder: Path) -> None:
    stream = RandomCropStream(
        DataSettings(folder, crop_size=32, batch_size=3, seed=4, fixed_noise=True), noise=StubNoise()
    )
    ref = [stream.batch(b) for b in range(6)]
    for workers in (0, 2):
        loader = DataLoader(stream, batch_size=None, num_workers=workers)
        it = iter(loader)
        assert_same(ref, [next(it) for _ in range(6)])
        del it


def test_ddp_ranks_split_the_single_process_batches_exactly(folder: Path) -> None:
    single = RandomCropStream(DataSettings(folder, crop_size=32, batch_size=4, seed=8))
    ranks = [
        RandomCropStream(DataSettings(folder, crop_size=32, batch_size=4, seed=8), rank=r, world_size=2)
        for r in (0, 1)
    ]
    for b in range(5):
        parts = [r.batch(b) for r in ranks]
        whole = single.batch(b)
        for k in whole:
            assert torch.equal(torch.cat([p[k] for p in parts]), whole[k])
        assert set(ranks[0].sample_ids(b)).isdisjoint(ranks[1].sample_ids(b))
    ids = [set(r.sample_ids(b).tolist()) for r in ranks for b in range(5)]
    assert len(set().union(*ids)) == 20  # no sample on two ranks or in two batches


def test_resume_at_start_batch_continues_the_fresh_stream(folder: Path) -> None:
    fresh = batches(RandomCropStream(DataSettings(folder, crop_size=32, batch_size=2, seed=1)), 7)
    resumed = RandomCropStream(DataSettings(folder, crop_size=32, batch_size=2, seed=1))
    resumed.start_batch = 3
    assert_same(fresh[3:], batches(resumed, 4))
    loader = DataLoader(resumed, batch_size=None, num_workers=2)
    it = iter(loader)
    assert_same(fresh[3:], [next(it) for _ in range(4)])
    del it


def test_rotate_aug_rotates_the_same_windows(folder: Path) -> None:
    plain = RandomCropStream(DataSettings(folder, crop_size=32, batch_size=8, seed=3))
    rot = RandomCropStream(DataSettings(folder, crop_size=32, batch_size=8, seed=3, rotate_aug=True))
    ks = []
    for b in range(5):
        p, r = plain.batch(b)["clean"], rot.batch(b)["clean"]
        for x, y in zip(p, r, strict=True):
            k = [torch.equal(torch.rot90(x, k, dims=(1, 2)), y) for k in range(4)]
            assert sum(k) == 1
            ks.append(k.index(True))
    assert set(ks) == {0, 1, 2, 3}


def test_fixed_noise_is_one_copy_per_image(tmp_path: Path) -> None:
    for i in range(3):
        random_rgb(tmp_path / f"{i}.png", 32, 32, seed=i)
    noise = StubNoise()
    # crop == image size: every crop of image i is the whole image, so its noisy pixels must repeat exactly
    stream = RandomCropStream(
        DataSettings(tmp_path, crop_size=32, batch_size=3, seed=0, fixed_noise=True), noise=noise
    )
    seen: dict[int, tuple[torch.Tensor, float]] = {}
    for b in range(4):
        out = stream.batch(b)
        assert out["noisy"].dtype == torch.float32 and out["params"].dtype == torch.float64
        assert out["noisy"].shape == (3, 3, 32, 32)
        for noisy, p, i in zip(out["noisy"], out["params"].tolist(), out["index"].tolist(), strict=True):
            if i in seen:
                assert torch.equal(seen[i][0], noisy) and seen[i][1] == p
            seen[i] = (noisy, p)
    assert len(seen) == 3 and len({p for _, p in seen.values()}) == 3
    assert not torch.allclose(seen[0][0], seen[1][0])
    other = RandomCropStream(
        DataSettings(tmp_path, crop_size=32, batch_size=3, seed=1, fixed_noise=True), noise=noise
    )
    first = other.batch(0)
    i = first["index"][0].item()
    assert not torch.equal(first["noisy"][0], seen[i][0])


def test_fixed_noise_window_matches_clean_window(folder: Path) -> None:
    exact = StubNoise(scale=0.0)  # noisy == clean / 255, so any misaligned crop or rotation shows
    stream = RandomCropStream(
        DataSettings(folder, crop_size=24, batch_size=6, rotate_aug=True, fixed_noise=True), noise=exact
    )
    for b in range(4):
        out = stream.batch(b)
        assert torch.equal(out["noisy"], out["clean"].float() / 255)


def test_fixed_noise_with_the_project_noise_model(folder: Path) -> None:
    noise_mod = pytest.importorskip("ssdn.noise")
    build = getattr(noise_mod, "build_noise", None)
    if build is None:
        pytest.skip("ssdn.noise.build_noise not available yet")
    noise = build("gaussian", [5, 50])
    stream = RandomCropStream(DataSettings(folder, crop_size=32, batch_size=4, fixed_noise=True), noise=noise)
    a, b = (
        stream.batch(0),
        RandomCropStream(DataSettings(folder, crop_size=32, batch_size=4, fixed_noise=True), noise=noise),
    )
    assert_same([a], [b.batch(0)])
    assert ((a["params"] >= 5) & (a["params"] <= 50)).all()
    assert not torch.equal(a["noisy"], a["clean"].float() / 255)


def test_several_sources_and_recursive_listing(tmp_path: Path) -> None:
    (tmp_path / "x" / "sub").mkdir(parents=True)
    (tmp_path / "y").mkdir()
    flat_rgb(tmp_path / "x" / "b.png", 40, 40)
    flat_rgb(tmp_path / "x" / "sub" / "a.png", 40, 40)
    flat_rgb(tmp_path / "y" / "c.png", 40, 40)
    names = [p.name for p in resolve_sources([tmp_path / "x", str(tmp_path / "y")])]
    assert names == ["b.png", "c.png"]
    names = [p.name for p in resolve_sources([tmp_path / "x", tmp_path / "y"], recursive=True)]
    assert names == ["b.png", "a.png", "c.png"]
    assert (
        len(
            RandomCropStream(
                DataSettings([tmp_path / "x", tmp_path / "y"], crop_size=32, recursive=True)
            ).files
        )
        == 3
    )


def test_embedded_photos_work_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the embedded dataset touched the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    photos = dict(embedded_photos(split="all"))
    assert set(photos) == {Path(n).stem for n in SPLITS["train"] + SPLITS["val"]}
    assert all(a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 for a in photos.values())
    assert all(min(a.shape[:2]) >= 256 for a in photos.values())
    assert set(SPLITS["train"]).isdisjoint(SPLITS["val"])
    assert [n for n, _ in embedded_photos(channels=1, split="val")] == ["chelsea", "coffee"]
    assert embedded_photos(channels=1, split="val")[0][1].shape[2] == 1

    stream = RandomCropStream(DataSettings("skimage", crop_size=256, batch_size=2, in_memory=False))
    assert stream.files == embedded_paths("train")
    assert stream.batch(0)["clean"].shape == (2, 3, 256, 256)
    assert [p.name for p in resolve_sources("skimage:val")] == list(SPLITS["val"])
    assert resolve_sources("skimage", default_split="val") == embedded_paths("val")
    with pytest.raises(ValueError, match="unknown embedded split"):
        resolve_sources("skimage:test")


def test_real_training_folders_with_the_size_filter(data_root: Path) -> None:
    bsds = data_root / "train-bsds500-400"
    if not bsds.is_dir():
        pytest.skip("train-bsds500-400 not present")
    stream = RandomCropStream(
        DataSettings(bsds, crop_size=256, batch_size=4, size_filter=True, in_memory=False)
    )
    assert len(stream.files) == 400 and stream.size_filtered_count == 0 and not stream.skipped_files
    out = stream.batch(0)
    assert out["clean"].shape == (4, 3, 256, 256) and out["clean"].dtype == torch.uint8
    imagenet = data_root / "train-imagenet-sample-1000"
    if imagenet.is_dir():  # MANIFEST: 782 of the 1000 lie inside the paper's 256..512 window
        inet = RandomCropStream(DataSettings(imagenet, crop_size=256, size_filter=True, in_memory=False))
        assert len(inet.files) == 782 and inet.size_filtered_count == 218
