"""LM-Searcher-tiny's build: the default data size follows the minutes; short runs are marked undertrained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.build_tiny import (
    RECIPE_DRAWS,
    RECIPE_SAMPLES,
    STEPS_PER_MINUTE,
    ModelExists,
    default_samples,
    draws_of,
    refuse_overwrite,
    undertrained,
    undertrained_warning,
)

SHIPPED_CARD = Path(__file__).resolve().parents[2] / "models" / "lm-searcher-tiny" / "lmsearcher.json"


def test_default_samples_follow_the_minutes_up_to_the_recipe():
    one = default_samples(1, 20000, 8, 10, RECIPE_SAMPLES)
    assert one == STEPS_PER_MINUTE * 8 * 10
    assert default_samples(2, 20000, 8, 10, RECIPE_SAMPLES) == 2 * one
    assert default_samples(35, 20000, 8, 10, RECIPE_SAMPLES) == RECIPE_SAMPLES  # the defaults keep the recipe's data
    assert default_samples(35, 5, 8, 10, RECIPE_SAMPLES) == 5 * 8 * 10  # --steps ends training sooner
    assert default_samples(1e-6, 20000, 8, 10, RECIPE_SAMPLES) == 8 * 10  # at least one batch


def test_the_shipped_model_is_not_undertrained_and_a_short_run_is():
    shipped = json.loads(SHIPPED_CARD.read_text())
    assert draws_of(shipped) == RECIPE_DRAWS  # its card predates batch_size: the recipe's 8 is assumed
    assert undertrained(shipped) is None
    short = {"steps": 250, "batch_size": 8, "minutes": 1.0, "stopped_by": "time", "previous": None}
    short["undertrained"] = undertrained(short)
    assert short["undertrained"] == {
        "draws": 2000,
        "recipe_draws": RECIPE_DRAWS,
        "share": round(2000 / RECIPE_DRAWS, 4),
    }
    warning = undertrained_warning(short)
    assert warning.startswith(
        "warning: undertrained: 2,000 draws in all (250 steps here, stopped by the 1-minute time limit)"
    )
    assert "7% of the shipped recipe's 28,192" in warning and "pick poorly" in warning and "more --minutes" in warning
    continued = {**short, "previous": shipped}  # --init from the shipped model: its training counts
    assert undertrained(continued) is None


@pytest.mark.parametrize(
    ("files", "refused"),
    [((), False), (("train_state.pt",), False), (("config.json",), True), (("model.safetensors",), True)],
)
def test_a_folder_holding_a_model_is_refused_but_a_checkpoint_resumes(tmp_path: Path, files, refused):
    for name in files:
        (tmp_path / name).write_text("{}")
    if refused:
        with pytest.raises(ModelExists, match="--overwrite"):
            refuse_overwrite(tmp_path, overwrite=False)
    else:
        refuse_overwrite(tmp_path, overwrite=False)
    refuse_overwrite(tmp_path, overwrite=True)
