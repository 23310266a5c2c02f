"""The weight average masking runs are evaluated with: its decay, and which weights validation, the end of fit
(the test sets) and the checkpoints actually see."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from ssdn.train import run
from ssdn.training.ema import WarmupEMA, ema_decay
from tests.conftest import TINY, compose_config


def test_decay_warms_up_then_holds() -> None:
    n = torch.tensor([0.0, 8.0, 90.0, 1e6])
    torch.testing.assert_close(ema_decay(0.999, n), torch.tensor([0.1, 0.5, 0.91, 0.999]))


def test_decay_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ema\.decay"):
        WarmupEMA(1.0)


def _net(module: L.LightningModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


class _Record(L.Callback):
    """The raw weights after every step, and the weights validation and the end of fit use."""

    def __init__(self) -> None:
        self.raw: list[dict[str, torch.Tensor]] = []
        self.validated: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self.raw.append(_net(pl_module))

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object
    ) -> None:
        self.validated.append(_net(pl_module))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.final = _net(pl_module)


def _expected_ema(raw: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    avg = dict(raw[0])  # the first update copies
    for n, weights in enumerate(raw[1:], start=1):
        d = float(ema_decay(decay, torch.tensor(float(n))))
        avg = {k: avg[k] * d + weights[k] * (1 - d) for k in avg}
    return avg


def test_validation_test_and_checkpoints_see_the_average(tmp_path: Path) -> None:
    cfg = compose_config(
        *TINY,
        "method=n2v_random",
        "method.mask_cell=8",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        output_dir=tmp_path,
    )
    rec = _Record()
    run(cfg, extra_callbacks=[rec])
    assert len(rec.raw) == 4 and len(rec.validated) == 2
    for seen, steps in zip(rec.validated, (2, 4), strict=True):
        expected = _expected_ema(rec.raw[:steps], 0.999)
        for k, v in expected.items():
            torch.testing.assert_close(seen[k], v, msg=k)
        assert any(not torch.equal(seen[k], rec.raw[steps - 1][k]) for k in seen), "validated the raw weights"
    final = _expected_ema(rec.raw, 0.999)
    for k, v in final.items():  # what run() then scores the test sets with
        torch.testing.assert_close(rec.final[k], v, msg=k)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    for k, v in final.items():
        torch.testing.assert_close(ckpt["state_dict"][k], v, msg=k)
        torch.testing.assert_close(ckpt["current_model_state"][k], rec.raw[-1][k], msg=k)
