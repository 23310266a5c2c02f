"""Every experiment row (the paper's tables, Figure 3, mono variants) composes, validates, trains for two steps
on tiny crops and evaluates on two tiny images of each test set, writing results.json; the rows follow the
paper's settings (lengths, methods, noise, names)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ssdn.config.compose import validate_config
from ssdn.train import run
from tests.conftest import TINY, compose_config

CONF = Path(__file__).resolve().parents[1] / "ssdn" / "conf" / "experiment"
ROWS = sorted(str(p.relative_to(CONF).with_suffix("")) for p in CONF.rglob("*.yaml"))
PAPER_SETS = ["kodak", "bsd300", "set14"]


def _rows(folder: str) -> list[str]:
    return [r.split("/", 1)[1] for r in ROWS if r.startswith(f"{folder}/")]


def test_every_row_of_the_paper_has_a_config() -> None:
    noises = {"gauss25": "sigma_global", "gauss5_50": "sigma_per_image"}
    table1 = {f"{n}-{m}" for n in noises for m in ("n2c", "n2n", "blindspot-sigma_known", "blindspot_mean")}
    table1 |= {f"{n}-blindspot-{u}" for n, u in noises.items()}
    table1 |= {f"{n}-blindspot_diag-{p}" for n, u in noises.items() for p in ("sigma_known", u)}
    table1 |= {f"{n}-cbm3d-sigma_{s}" for n in noises for s in ("known", "estimated")}
    assert set(_rows("table1")) == table1
    noises3 = {
        "poisson30": "sigma_global",
        "poisson5_50": "sigma_per_image",
        "impulse50": "sigma_global",
        "impulse0_100": "sigma_per_image",
    }
    table3 = {f"{n}-{m}" for n in noises3 for m in ("n2c", "n2n", "blindspot-sigma_known", "blindspot_mean")}
    table3 |= {f"{n}-blindspot-{u}" for n, u in noises3.items()} | {"poisson30-anscombe"}
    assert set(_rows("table3")) == table3
    sizes = ["nall", "n10000", "n1000", "n500", "n300", "n200", "n100"]
    table2 = {
        f"gauss25-{m}-{s}{r}" for m in ("n2c", "blindspot-sigma_known") for s in sizes for r in ("", "-rot")
    }
    assert set(_rows("table2")) == table2
    assert set(_rows("figure3")) == {
        "gauss25-masking_copy-sigma_known",
        "gauss25-masking_random-sigma_known",
        "gauss25-blindspot-sigma_known-ema",
    }
    assert len(_rows("mono")) == 12


@pytest.mark.parametrize("row", ROWS)
def test_row_settings_follow_the_paper(row: str) -> None:
    cfg = compose_config(f"experiment={row}")
    validate_config(cfg)
    assert cfg.run.name == Path(row).name
    folder, name = row.split("/")
    assert cfg.run.group == folder
    assert list(cfg.eval.sets) == (["kodak"] if folder == "figure3" else PAPER_SETS)
    if cfg.method.get("classical"):
        return
    assert (cfg.data.crop_size, cfg.data.batch_size, cfg.trainer.accelerator) == (256, 4, "gpu")
    length = {"blindspot_mean": 8_000_000, "n2c": 16_000_000, "n2n": 16_000_000}
    expected = length.get(cfg.method.tag, 4_000_000) if name.startswith("impulse") else 2_000_000
    if folder == "figure3" and cfg.method.masking:
        expected = 80_000_000  # 20M minibatches: x = 10 on the figure's cost axis
    assert cfg.train.images == expected
    if folder == "table2":
        subset = None if "-nall" in name else int(name.split("-n")[-1].split("-")[0])
        assert (cfg.data.subset, cfg.data.rotate_aug) == (subset, name.endswith("-rot"))
        assert cfg.data.subset_seed == 0 or subset is None
    if folder == "figure3":
        assert cfg.ema.enabled and cfg.schedule.rampdown == 0.0
        assert cfg.method.objective == "prior" and cfg.noise_params.source == "known"
        assert cfg.data.val_count == 24 and "kodak" in str(cfg.data.val_dir)
    if folder == "mono":
        assert cfg.channels == 1


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS)
def test_row_trains_and_evaluates(row: str, data_root: Path, tmp_path: Path) -> None:
    overrides = [
        f"experiment={row}",
        "data=embedded",
        "trainer=cpu",
        *TINY,
        "eval.limit=2",
        "eval.repeats=1",
        f"eval.root={data_root}",
    ]
    if row.startswith("table2/") and "-nall" not in row:
        overrides.append("data.subset=2")  # the embedded photos stand in for the training set
    classical = OmegaConf.select(compose_config(f"experiment={row}"), "method.classical")
    if classical:
        pytest.importorskip("bm3d", reason="classical rows need pip install 'ssdn[bm3d]'")
        overrides += ["eval.crop=64", "method.workers=1"]  # no process pool: its start-up would dominate
    else:
        overrides.append("eval.crop=32")
    cfg = compose_config(*overrides, output_dir=tmp_path)
    metrics = run(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["sets"]) == list(cfg.eval.sets)
    for s in results["sets"].values():
        psnr = s["psnr"][s["reported"]]
        assert s["count"] == 2 and math.isfinite(psnr)
        if classical:  # two training steps do not denoise; a classical method does
            assert psnr > s["psnr"]["noisy"]
    assert all(f"test/{name}/psnr" in metrics for name in cfg.eval.sets)
