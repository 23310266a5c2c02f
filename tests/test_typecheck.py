"""The type check of ``ssdn/`` (mypy with the ``[tool.mypy]`` settings of pyproject.toml) as a test, so the
README's single test command also runs it in CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_finds_no_errors_in_ssdn() -> None:
    # From the repository root so mypy reads pyproject.toml; its cache (.mypy_cache, or $MYPY_CACHE_DIR) makes
    # reruns fast.
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"mypy failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
