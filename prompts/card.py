"""A ranker model's card: ``lmsearcher.json`` in its folder names the prompt settings it was trained with.

Why here: both the trainers (``finetune``) that write cards and the rankers (``agent.llm``) that read
them depend on the prompt formats, so the card lives with the prompts and neither imports the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL_CARD = "lmsearcher.json"
CARD_SETTINGS = ("prompt_format", "history_cap", "slot_weighting")  # what a ranker reads of a card
DEFAULT_LOCAL_MODEL = Path(__file__).resolve().parent.parent / "models" / "lm-searcher-tiny"


def model_card(path: Path) -> dict[str, Any]:
    """Prompt settings a model was trained with, if its folder has a card."""
    settings = whole_card(path)
    return {key: settings[key] for key in CARD_SETTINGS if key in settings}


def whole_card(path: Path) -> dict[str, Any]:
    """Everything a model folder's card says (training record, dtype, committee members); {} without a card."""
    card = path / MODEL_CARD
    return json.loads(card.read_text()) if card.is_file() else {}


def committee_members(path: Path) -> list[Path]:
    """The other models whose grades the in-process ranker averages with this one's: the card's ``members``,
    folders relative to the model's own. Several independently trained models read a history with less of any
    one training's noise (BENCHMARKS.md §16)."""
    return [path / member for member in whole_card(path).get("members", [])]
