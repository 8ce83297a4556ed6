"""The choice format: slot-tagged codes, labelled candidates, answers as a predicted score per label."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from prompts.choice import LABELS, answer, parse_pick, tag, unsupported, untag
from prompts.render import render, render_generation
from tools.evaluator import Metric

ACCURACY = Metric("accuracy", True, "validation accuracy")
ERROR = Metric("error", False, "error rate")


def test_tags_name_slot_and_option_and_round_trip() -> None:
    assert tag("10") == chr(0xE000 + 1) + chr(0xE000 + 16)
    assert tag("3") != tag("03")[1], "the same option in another slot is another token"
    assert untag("x" + tag("0f3a") + "=B") == "0f3a"
    with pytest.raises(ValueError, match="options 0-15"):
        tag("0g")


def test_prompt_lists_history_best_first_with_scores_0_to_9_and_labels_candidates() -> None:
    history = [("000", 0.5), ("111", 1.0), ("222", 0.9)]
    [message] = render("choice", "toy", 3, ACCURACY, history, ["012", "210"])
    assert message["role"] == "system"
    assert f"9:{tag('111')},7:{tag('222')},0:{tag('000')}," in message["content"]
    assert f"{tag('012')}=A;{tag('210')}=B;" in message["content"]
    assert "toy" not in message["content"] and "accuracy" not in message["content"]


def test_minimised_metrics_get_9_for_the_lowest_error() -> None:
    [message] = render("choice", "toy", 2, ERROR, [("00", 0.3), ("11", 0.1)], ["01"])
    assert f"9:{tag('11')},0:{tag('00')}," in message["content"]


def test_more_candidates_than_labels_are_refused() -> None:
    with pytest.raises(ValueError, match=f"at most {len(LABELS)} candidates"):
        render("choice", "toy", 2, ACCURACY, [], [f"{i:02d}" for i in range(len(LABELS) + 1)])


@pytest.mark.parametrize(
    ("slots", "options", "pool", "problem"),
    [(6, 5, 10, None), (64, 16, 26, None), (65, 3, 10, "at most 64 slots"), (6, 17, 10, "at most 16 options"),
     (6, 5, 27, "--pool-size 26")],
)  # fmt: skip
def test_unsupported_names_the_limit_and_the_way_out(slots: int, options: int, pool: int, problem: str | None) -> None:
    found = unsupported(slots, options, pool)
    assert found is None if problem is None else problem in found


def test_answer_grades_each_candidate_by_its_place_among_the_candidates() -> None:
    assert answer([0.2, 0.9, 0.5, 1.3, 0.0]) == "A2B7C5D9E0"
    assert answer([0.4, 0.4, 0.1]) == "A9B9C0", "ties share a grade"
    assert answer([0.7]) == "A0"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("A3B9C1", {"11"}), ("C7", {"22"}), (" A: 4, B=2 ", {"00"}), ("A1B1D9", {"00", "11"}), ("A3A9B5", {"11"}),
     ("D9", {None}), ("", {None}), ("ABC", {None})],
)  # fmt: skip
def test_parse_pick_takes_the_highest_grade(text: str, expected: set[str | None]) -> None:
    assert parse_pick(text, ["00", "11", "22"], random.Random(0)) in expected


def test_parse_pick_breaks_ties_at_random_not_by_position() -> None:
    picks = Counter(parse_pick("A9B9C9D2", ["00", "11", "22", "33"], random.Random(seed)) for seed in range(300))
    assert set(picks) == {"00", "11", "22"} and min(picks.values()) > 60


def test_generation_prompt_is_short_and_tagged() -> None:
    [short] = render_generation("choice", "toy", 2, ACCURACY, [("00", 0.1), ("11", 0.2)], 20)
    [compact] = render_generation("compact", "toy", 2, ACCURACY, [("00", 0.1), ("11", 0.2)], 20)
    assert f"9:{tag('11')},0:{tag('00')}," in short["content"] and "11|1.0000,00|0.0000," in compact["content"]
    assert len(short["content"]) < len(compact["content"])
