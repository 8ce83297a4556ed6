"""Fixtures for the finetune tests: one torch thread, the training tables' folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Training tests share a small, busy machine: one thread is faster than contended ones."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def train_domains_dir() -> Path:
    """$LMSEARCHER_DATA/train_domains, else ../shared/data/train_domains (skips when absent)."""
    env = os.environ.get("LMSEARCHER_DATA")
    root = Path(env).expanduser() if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    path = root / "train_domains"
    if not path.is_dir():
        pytest.skip(f"training tables not found at {path}; set LMSEARCHER_DATA")
    return path
