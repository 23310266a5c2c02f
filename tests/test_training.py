"""Training end to end on tiny settings: every method × noise × parameter source the paper uses trains, writes a
checkpoint that loads back; resume reproduces an uninterrupted run; non-finite steps are skipped and counted."""

from __future__ import annotations

import csv
import json
import logging
import time
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Checkpoint

from ssdn.config.compose import ConfigError
from ssdn.train import run, train_job
from ssdn.training.checkpoints import load_denoiser, read_checkpoint
from tests.conftest import TINY, StopAfter, compose_config

# (noise option, method option, noise_params option) for every trained row of Tables 1 and 3 (+ Figure 3).
ROWS = [
    *[(n, "ssdn", p) for n in ("gaussian", "poisson", "impulse") for p in ("sigma_known", "sigma_global")],
    *[
        (n, "ssdn", p)
        for n in ("gaussian_range", "poisson_range", "impulse_range")
        for p in ("sigma_known", "sigma_per_image")
    ],
    ("gaussian", "ssdn_diag", "sigma_known"),
    ("gaussian", "ssdn_diag", "sigma_global"),
    ("gaussian_range", "ssdn_diag", "sigma_per_image"),
    *[
        (n, m, "sigma_known")
        for n in ("gaussian", "poisson", "impulse", "impulse_range")
        for m in ("mu_only", "n2c", "n2n")
    ],
    ("gaussian", "n2v_copy", "sigma_known"),
    ("gaussian", "n2v_random", "sigma_known"),
]


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class _Capture(L.Callback):
    """Keeps the initial weights and the fitted module for assertions."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.initial = _weights(pl_module)
        self.module = pl_module


@pytest.mark.parametrize(("noise", "method", "params"), ROWS, ids=["-".join(r) for r in ROWS])
def test_every_row_trains_and_checkpoints(tmp_path: Path, noise: str, method: str, params: str) -> None:
    cfg = compose_config(
        *TINY, f"noise={noise}", f"method={method}", f"noise_params={params}", output_dir=tmp_path
    )
    cap = _Capture()
    metrics = run(cfg, extra_callbacks=[cap])
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert metrics["images_seen"] == 4 and metrics["skipped_steps"] == 0
    after = _weights(cap.module)
    changed = [k for k in cap.initial if k.startswith("net.") and not torch.equal(cap.initial[k], after[k])]
    assert changed, "no network weight changed in two steps"
    # A learned level (sigma_global's scalar, sigma_per_image's estimator) must be trained, not just present:
    # a detached level or one left out of the optimiser keeps its start value.
    level = [k for k in cap.initial if k.startswith("method.level_source.")]
    assert bool(level) == (params != "sigma_known")
    assert not level or any(not torch.equal(cap.initial[k], after[k]) for k in level), "level did not train"
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    loaded = load_denoiser(ckpt)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, after[k]), k
    noisy = torch.rand(1, 3, 32, 32)
    outs = loaded.denoise(noisy, loaded.noise.sample_params(1, torch.Generator().manual_seed(0)))
    first = next(iter(outs.values()))
    assert first.shape == (1, 3, 32, 32) and torch.isfinite(first).all()
    if "sigma_global" in params or "sigma_per_image" in params:
        assert "train/noise_level" in metrics


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    common = (
        *TINY,
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
        "trainer.checkpoint_every_n_steps=3",
        "trainer.log_every_n_steps=1",
        "noise_params=sigma_global",
    )
    full, full_cap = tmp_path / "full", _Capture()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(compose_config(*common, output_dir=full), extra_callbacks=[full_cap])
    # the step-6 checkpoint holds the post-step weights on purpose: Lightning's warning about it is silenced
    assert not [w for w in caught if "manual optimization" in str(w.message)]
    split = tmp_path / "split"
    run(compose_config(*common, output_dir=split), extra_callbacks=[StopAfter(3)])
    first = read_checkpoint(split / "checkpoints" / "last.ckpt")
    assert first["global_step"] == 3 and first["ssdn_progress"]["images_seen"] == 6
    resumed_cap = _Capture()
    run(compose_config(*common, "resume=auto", output_dir=split), extra_callbacks=[resumed_cap])
    a, b = full_cap.module, resumed_cap.module
    assert (a.images_seen, a.batches_seen, a.trainer.global_step) == (b.images_seen, b.batches_seen, 6)
    assert a.optimizers().param_groups[0]["lr"] == b.optimizers().param_groups[0]["lr"]
    wa, wb = _weights(a), _weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6, msg=k)
    # The CSV history survives the resume: the same rows as the uninterrupted run, none twice.
    full_rows, split_rows = (_csv_rows(d / "csv" / "metrics.csv") for d in (full, split))
    assert [r["step"] for r in split_rows] == [r["step"] for r in full_rows]
    assert {r["step"] for r in full_rows} >= {"0", "2", "5"}
    for rf, rs in zip(full_rows, split_rows, strict=True):
        for key in ("train/loss", "val/psnr"):
            if rf.get(key):
                assert float(rs[key]) == pytest.approx(float(rf[key]), rel=1e-3), (rf["step"], key)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_non_finite_step_is_skipped_and_counted(tmp_path: Path) -> None:
    class _Poison(L.Callback):
        def on_train_batch_start(
            self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object
        ) -> None:
            if trainer.global_step == 1 and not hasattr(self, "done"):
                self.done = True
                self.before = _weights(pl_module)
                pl_module.net.nin_c.bias.data[0] = float("nan")

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
            if hasattr(self, "before") and not hasattr(self, "checked"):
                self.checked = True
                pl_module.net.nin_c.bias.data[0] = self.before["net.nin_c.bias"][0]
                for k, v in _weights(pl_module).items():
                    assert torch.equal(v, self.before[k]), f"{k} changed in a skipped step"

    cfg = compose_config(*TINY, "trainer.max_steps=3", "trainer.val_check_interval=3", output_dir=tmp_path)
    poison = _Poison()
    metrics = run(cfg, extra_callbacks=[poison])
    assert poison.checked
    assert metrics["skipped_steps"] == 1
    assert metrics["images_seen"] == 8  # 4 batches of 2: a skipped step does not count as an optimizer step


def test_wandb_offline_run_logs_loss_psnr_and_panel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.wandb_offline import read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_config(*TINY, "logger=wandb", "trainer.log_every_n_steps=1", output_dir=tmp_path)
    run(cfg)
    (run_dir,) = sorted((tmp_path / "wandb").glob("offline-run-*"))
    # wandb-core writes the transaction log asynchronously: give it a moment after wandb.finish() returns.
    deadline = time.monotonic() + 60
    while True:
        logged = read_offline_run(run_dir)
        keys = set().union(*logged["history"])
        if ("val/psnr" in keys and "images_seen" in logged["summary"]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {"train/loss", "val/psnr", "val/psnr_pme", "val/psnr_mu", "train/images_per_sec"} <= keys
    panel = next(row for row in logged["history"] if "val/panel/_type" in row)
    assert panel["val/panel/count"] == 1 and panel["val/panel/captions"] == ["noisy | pme | mu | clean"]
    assert logged["config"]["run"]["name"] == "gauss25-blindspot-sigma_known"
    assert "hydra_overrides" in logged["config"]
    assert logged["summary"]["images_seen"] == 4
    assert (tmp_path / "val_panel.png").is_file()


def test_training_then_protocol_evaluation_writes_results(tmp_path: Path, data_root: Path) -> None:
    cfg = compose_config(
        *TINY,
        "eval.sets=[kodak,set14]",
        "eval.repeats=1",
        "eval.limit=2",
        "eval.crop=64",
        f"eval.root={data_root}",
        output_dir=tmp_path,
    )
    metrics = run(cfg)
    assert metrics["test/kodak/count"] == 2 and metrics["test/set14/count"] == 2
    assert metrics["test/kodak/psnr"] == metrics["test/kodak/psnr_pme"]
    results = json.loads((tmp_path / "results.json").read_text())["sets"]
    written = json.loads((tmp_path / "metrics.json").read_text())
    per_image = _csv_rows(tmp_path / "per_image.csv")
    names = {s: [r["name"] for r in per_image if r["set"] == s] for s in ("kodak", "set14")}
    assert names == {"kodak": ["kodim01.png", "kodim02.png"], "set14": ["baboon.png", "barbara.png"]}
    for s in ("kodak", "set14"):
        rows = [float(r["psnr_noisy"]) for r in per_image if r["set"] == s]
        # The three files agree: the set's number is the mean of its images, in results.json and metrics.json.
        assert results[s]["psnr"]["noisy"] == written[f"test/{s}/psnr_noisy"] == pytest.approx(sum(rows) / 2)
        # σ = 25 noise is 10·log10(255²/25²) = 20.17 dB; clipping to [0, 255] only removes error, and a 64²
        # RGB crop (12 288 samples) moves the MSE by ~1.3% (0.06 dB) per std, so 19.9 dB is 4 stds below.
        # Measured 20.24, 20.57, 20.93, 20.20; σ = 20 would give 22.1 dB and σ = 30 18.6 dB.
        assert all(19.9 < v < 22.0 for v in rows), rows


def test_user_error_in_a_single_run_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = compose_config(*TINY, "data.batch_size=-1", output_dir=tmp_path)
    try:
        with pytest.raises(SystemExit) as info:
            train_job(cfg)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("ssdn-train: error: invalid configuration") and "data.batch_size=-1" in err
        assert "Traceback" not in err
        monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the traceback, for a bug report
        with pytest.raises(ConfigError, match=r"data\.batch_size=-1"):
            train_job(cfg)
    finally:
        logging.captureWarnings(False)  # train_job routes warnings to the job's log; not this process's


def test_checkpoints_without_validation(tmp_path: Path) -> None:
    """With validation off, last.ckpt still follows trainer.checkpoint_every_n_steps; no best.ckpt exists."""
    saved: list[int] = []

    class _Watch(Checkpoint):  # a Checkpoint, so that Lightning runs it after LastCheckpoint in each hook
        def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
            ckpt = tmp_path / "checkpoints" / "last.ckpt"
            if ckpt.is_file():
                saved.append(read_checkpoint(ckpt)["global_step"])

    cfg = compose_config(
        *TINY,
        "data.val_count=0",
        "trainer.max_steps=4",
        "trainer.checkpoint_every_n_steps=1",
        output_dir=tmp_path,
    )
    run(cfg, extra_callbacks=[_Watch()])
    assert saved == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]
