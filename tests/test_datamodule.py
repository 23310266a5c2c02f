"""DenoisingDataModule: fixed validation set, DDP layout, exact resume through Lightning, recorded data."""

from __future__ import annotations

import warnings
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from ssdn.config.compose import compose
from ssdn.config.run import RunConfig
from ssdn.config.schema import ConfigError, DataConfig, DataSettings
from ssdn.data.crops import DataWarning, RandomCropStream
from ssdn.data.datamodule import VAL_SEED_OFFSET, DenoisingDataModule
from ssdn.data.embedded import embedded_paths
from ssdn.data.io import load_image
from ssdn.noise import build_noise
from ssdn.training.checkpoints import read_checkpoint

SIZES = [(72, 64), (64, 80), (96, 64), (64, 64), (70, 90)]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Training images in ``imgs/``; validation images of the same sizes (other pixels) in ``val/``."""
    rng = np.random.default_rng(0)
    for name in ("imgs", "val"):
        (tmp_path / name).mkdir()
        for i, (w, h) in enumerate(SIZES):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                tmp_path / name / f"im{i}.png"
            )
    return tmp_path / "imgs"


def make(folder: Path, **kw: object) -> DenoisingDataModule:
    args: dict[str, object] = dict(
        train_dir=str(folder),
        val_dir=str(folder.parent / "val"),
        crop_size=32,
        batch_size=4,
        val_size=64,
        val_count=3,
    )
    args.update(kw)
    return DenoisingDataModule(DataSettings(**args), noise=build_noise("gaussian", [5, 50]))  # type: ignore[arg-type]


def fake_trainer(rank: int, world: int, batches_seen: int = 0) -> SimpleNamespace:
    module = SimpleNamespace(batches_seen=torch.tensor(batches_seen))
    return SimpleNamespace(
        global_rank=rank,
        world_size=world,
        lightning_module=module,
        strategy=SimpleNamespace(root_device=None),
    )


def val_batch(dm: DenoisingDataModule) -> dict[str, torch.Tensor]:
    return next(iter(dm.val_dataloader()))


def test_validation_set_is_fixed_and_correct(folder: Path) -> None:
    dm = make(folder)
    dm.setup("fit")
    first = val_batch(dm)
    dm.setup("validate")
    assert all(torch.equal(first[k], v) for k, v in val_batch(dm).items())
    other = make(folder)
    other.setup("validate")
    assert all(torch.equal(first[k], v) for k, v in val_batch(other).items())

    assert [p.name for p in dm.val_files] == ["im0.png", "im1.png", "im2.png"]
    assert first["clean"].dtype == torch.float32 and first["clean"].shape == (3, 3, 64, 64)
    assert first["noisy"].dtype == torch.float32 and first["params"].dtype == torch.float64
    assert first["index"].tolist() == [0, 1, 2]
    image = load_image(folder.parent / "val" / "im1.png")  # 64 wide, 80 high: centre crop starts at row 8
    assert torch.equal(first["clean"][1], torch.from_numpy(image[8:72]).permute(2, 0, 1).float() / 255)
    gen = torch.Generator().manual_seed(dm.settings.seed + VAL_SEED_OFFSET)
    assert torch.equal(first["params"], build_noise("gaussian", [5, 50]).sample_params(3, gen))
    assert ((first["params"] >= 5) & (first["params"] <= 50)).all()
    resid = (first["noisy"] - first["clean"]) * 255
    assert 3 < resid.std() < 60

    reseeded = make(folder, seed=1)
    reseeded.setup("validate")
    assert not torch.equal(val_batch(reseeded)["noisy"], first["noisy"])


def test_validation_defaults_to_the_embedded_val_split(tmp_path: Path) -> None:
    dm = DenoisingDataModule(
        DataSettings(train_dir="skimage", batch_size=2), noise=build_noise("gaussian", 25)
    )
    dm.setup("validate")
    assert dm.val_files == embedded_paths("val")
    batch = val_batch(dm)
    assert batch["noisy"].shape == (2, 3, 256, 256) and batch["params"].tolist() == [25.0, 25.0]


def test_validation_errors_and_small_images(folder: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.val_size=100: .*positive multiple of 32"):
        make(folder, val_size=100)
    with pytest.warns(DataWarning, match=r"skipped 5 image\(s\) smaller than val_size=96: im0.png, im1.png"):
        with pytest.raises(
            ValueError, match="no decodable validation image of at least 96x96; lower val_size"
        ):
            make(folder, val_size=96).setup("validate")
    Image.new("RGB", (100, 96)).save(folder.parent / "val" / "im5.png")
    with pytest.warns(DataWarning, match=r"skipped 5 image\(s\) smaller than val_size=96"):
        dm = make(folder, val_size=96)
        dm.setup("validate")
    assert [p.name for p in dm.val_files] == ["im5.png"] and val_batch(dm)["clean"].shape == (1, 3, 96, 96)
    no_noise = DenoisingDataModule(
        DataSettings(train_dir=str(folder), val_dir=str(folder.parent / "val"), val_size=64)
    )
    with pytest.raises(ValueError, match=r"set_noise\(\)"):
        no_noise.setup("validate")
    no_noise.set_noise(build_noise("gaussian", 25))
    no_noise.setup("validate")
    assert len(no_noise.val_files) == 4


def test_train_and_val_overlap_is_warned(folder: Path) -> None:
    with pytest.warns(DataWarning, match=r"3 validation image\(s\) are also training images"):
        make(folder, val_dir=str(folder)).setup("fit")


def test_missing_folders_fail_at_setup(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train_dir: image folder"):
        make(tmp_path / "missing").setup("fit")
    with pytest.raises(FileNotFoundError, match="val_dir: image folder"):
        make(folder, val_dir=str(tmp_path / "missing")).setup("fit")


def test_global_batch_is_split_over_ranks_and_resumes(folder: Path) -> None:
    single = RandomCropStream(DataSettings(str(folder), crop_size=32, batch_size=4, seed=0))
    parts = []
    for rank in (0, 1):
        dm = make(folder)
        dm.trainer = fake_trainer(rank, 2, batches_seen=3)  # type: ignore[assignment]
        dm.setup("fit")
        loader = dm.train_dataloader()
        assert loader.dataset.start_batch == 3 and loader.dataset.batch_size == 2
        assert dm.batch_size == 4  # the global batch, which the LightningModule counts images with
        parts.append(next(iter(loader)))
    for k in ("clean", "index"):
        assert torch.equal(torch.cat([p[k] for p in parts]), single.batch(3)[k])
    dm = make(folder, batch_size=3)
    dm.trainer = fake_trainer(0, 2)  # type: ignore[assignment]
    with pytest.raises(
        ValueError, match=r"data\.batch_size=3 must be a positive multiple of the world size 2"
    ):
        dm.setup("fit")


def test_fixed_noise_needs_the_noise_model(folder: Path) -> None:
    dm = DenoisingDataModule(DataSettings(train_dir=str(folder), crop_size=32, fixed_noise=True, val_count=0))
    with pytest.raises(ValueError, match="fixed_noise=true needs the noise model"):
        dm.setup("fit")
    dm.set_noise(build_noise("poisson", 30))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["noisy"].shape == batch["clean"].shape and batch["params"].tolist() == [30.0] * 4
    assert dm.val_dataloader() == []


def test_state_dict_records_the_data(folder: Path) -> None:
    (folder / "broken.png").write_bytes(b"nope")
    with pytest.warns(DataWarning, match="broken.png"):
        dm = make(folder, subset=3, subset_seed=2)
        dm.setup("fit")
    state = dm.state_dict()
    assert state["train"]["files"] == [str(p) for p in dm.train_files] and len(dm.train_files) == 3
    assert state["train"]["skipped_files"] == [str(folder / "broken.png")] == dm.skipped_files
    assert state["val_files"] == [str(p) for p in dm.val_files]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.load_state_dict(state)  # same data: silent
    changed = {"train": {**state["train"], "files": state["train"]["files"][:2]}}
    with pytest.warns(DataWarning, match="resuming on different training images"):
        dm.load_state_dict(changed)


class Recorder(L.LightningModule):
    """Minimal module with the ``batches_seen`` counter (a buffer, so it is checkpointed)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.register_buffer("batches_seen", torch.tensor(0))
        self.seen: list[torch.Tensor] = []
        self.val_noisy: list[torch.Tensor] = []

    def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
        self.seen.append(batch["clean"].clone())
        self.batches_seen += 1
        x = batch["clean"].float() / 255
        return (self.conv(x) - x).pow(2).mean()

    def validation_step(self, batch: dict[str, torch.Tensor], _: int) -> None:
        self.val_noisy.append(batch["noisy"].clone())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(
    dm: DenoisingDataModule, module: Recorder, steps: int, root: Path, ckpt: Path | None = None
) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        default_root_dir=root,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return trainer


def test_lightning_resume_continues_the_exact_batch_sequence(folder: Path, tmp_path: Path) -> None:
    fresh = RandomCropStream(DataSettings(str(folder), crop_size=32, batch_size=4, seed=0))
    first = Recorder()
    trainer = fit(make(folder), first, 2, tmp_path)
    assert all(torch.equal(x, fresh.batch(b)["clean"]) for b, x in enumerate(first.seen))
    ckpt = tmp_path / "step2.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = read_checkpoint(ckpt)["DenoisingDataModule"]
    assert saved["train"]["files"] == [str(p) for p in sorted(folder.glob("*.png"))]

    resumed = Recorder()
    fit(make(folder), resumed, 4, tmp_path, ckpt=ckpt)
    assert int(resumed.batches_seen) == 4 and len(resumed.seen) == 2
    assert all(torch.equal(x, fresh.batch(b + 2)["clean"]) for b, x in enumerate(resumed.seen))
    assert torch.equal(first.val_noisy[0], resumed.val_noisy[0])  # same validation noise in both runs


@pytest.mark.parametrize("name", ["embedded", "folder", "imagenet"])
def test_data_settings_from_every_data_config(name: str) -> None:
    """Every ``conf/data`` option is the one data section; channels and seed come from the run."""
    cfg = compose(f"data={name}", output_dir="/tmp/x")  # composed, so the option's schema defaults apply
    cfg.data.train_dir = ["a", "b"]  # a config list becomes a tuple
    run = RunConfig.from_dictconfig(cfg)
    settings = DataSettings.of(run.data, channels=1, seed=5)
    assert settings.train_dir == ("a", "b") and settings.channels == 1 and settings.seed == 5
    assert settings.crop_size == cfg.data.crop_size and settings.val_size == cfg.data.val_size
    assert (settings.num_workers, settings.recursive, settings.in_memory) == (
        cfg.data.num_workers,
        cfg.data.recursive,
        cfg.data.in_memory,
    )


def test_one_data_definition_with_one_set_of_defaults() -> None:
    """The data module reads the run config's data section: its defaults are the schema's, not a second set."""
    names = {f.name for f in fields(DataConfig)}
    assert {f.name for f in fields(DataSettings)} == names | {"channels", "seed", "model"}
    settings = DataSettings(train_dir="x")
    assert all(getattr(settings, n) == getattr(DataConfig(train_dir="x"), n) for n in names - {"curriculum"})


def test_data_settings_reject_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"data\.subset=0: give a positive image count"):
        DataSettings(train_dir="x", subset=0)
    with pytest.raises(ConfigError, match=r"channels=2: use 3 \(RGB\) or 1 \(mono\)"):
        DataSettings(train_dir="x", channels=2)
    with pytest.raises(ConfigError, match=r"data\.val_size=48: .* positive multiple of 32"):
        DataSettings(train_dir="x", val_size=48)
    with pytest.raises(
        ConfigError, match=r"^invalid configuration: data\.num_workers=-1 must be >= 0; data\.val_count"
    ):
        DataSettings(train_dir="x", num_workers=-1, val_count=-1)
