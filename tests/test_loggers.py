"""W&B mode and credential detection: ``auto`` goes online only with credentials, ``WANDB_MODE`` wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssdn.training.loggers import wandb_credentials_configured, wandb_mode


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_credentials_from_netrc_or_api_key(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not wandb_credentials_configured()
    (home / ".netrc").write_text("machine example.org login x password y\n")
    assert not wandb_credentials_configured()
    (home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password k\n")
    assert wandb_credentials_configured()
    (home / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert wandb_credentials_configured()


def test_auto_mode(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert wandb_mode("auto") == "offline"
    assert wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode("auto") == "offline"


def test_mode_names_wandb_accepts_or_a_clear_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # W&B's older name for offline
    assert wandb_mode("auto") == "offline"
    assert wandb_mode("shared") == "shared"
    with pytest.raises(ValueError, match=r"W&B mode 'onlin' \(logger.mode"):
        wandb_mode("onlin")
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(ValueError, match=r"'bogus'.*WANDB_MODE"):
        wandb_mode("auto")
