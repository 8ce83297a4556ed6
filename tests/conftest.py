"""Shared fixtures: where the benchmark tables live (skipping cleanly when they do not)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def nb201_dir() -> Path:
    """The NAS-Bench-201 JSON tables: $LMSEARCHER_DATA/nb201, else ../shared/data/nb201."""
    env = os.environ.get("LMSEARCHER_DATA")
    if env:
        path = Path(env).expanduser() / "nb201"
    else:
        path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201"
    if not (path / "nasbench201_cifar10.json").is_file():
        pytest.skip(f"NAS-Bench-201 tables not found at {path}; set LMSEARCHER_DATA")
    return path
