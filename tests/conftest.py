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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaMA built and trained here for a few steps (tokenizer + LlamaConfig + real training
    steps on curated synthetic samples), saved in Hugging Face format, so that a real
    ``transformers serve`` can answer with code-like digit strings."""
    import random

    from finetune.curate import CurationOptions, Domain, curate
    from finetune.landscapes import METRIC, random_landscape
    from finetune.tiny_model import TinySize, new_tiny, save
    from finetune.train_tiny import TrainOptions, train

    rng = random.Random(0)
    landscapes = [random_landscape(rng) for _ in range(30)]
    domains = [Domain(land.space.name, land.space, METRIC, land.score) for land in landscapes]
    samples = curate(domains, 300, 0, CurationOptions(min_archs=8, max_archs=14, candidates=4))
    model, tokenizer = new_tiny(TinySize(hidden=64, layers=2, heads=2, intermediate=128, max_positions=2048))
    train(model, tokenizer, samples, TrainOptions(steps=80, batch_size=16, lr=3e-3, log_every=1000), log=lambda _: None)
    return save(model, tokenizer, tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def grade_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaMA in the ``grade`` format (as ``finetune tiny`` builds, but for a few steps), with the
    model card that makes ``--ranker local:PATH`` ask it one candidate at a time."""
    import json

    from finetune.curate import CurationOptions, curate
    from finetune.domains import load_domain
    from finetune.tiny_model import TinySize, new_tiny, save
    from finetune.train_tiny import TrainOptions, train

    options = CurationOptions(min_archs=12, max_archs=20, candidates=4, prompt_format="grade", history_cap=8)
    samples = curate(load_domain("synthetic:20"), 200, 0, options)
    model, tokenizer = new_tiny(TinySize(hidden=64, layers=2, heads=2, intermediate=128, max_positions=2048))
    train(model, tokenizer, samples, TrainOptions(steps=150, batch_size=8, lr=3e-3, log_every=1000), log=lambda _: None)
    folder = save(model, tokenizer, tmp_path_factory.mktemp("models") / "grade")
    (folder / "lmsearcher.json").write_text(json.dumps({"prompt_format": "grade", "history_cap": 8}))
    return folder
