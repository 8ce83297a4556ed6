"""The choice format: slot-tagged candidates, score-carrying history codes, answers as a grade per label."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from evaluators.base import Metric
from prompts.choice import (
    LABELS,
    answer,
    graded,
    labelled,
    parse_pick,
    read_history,
    spread,
    tag,
    unsupported,
    untag,
)
from prompts.render import render, render_generation

ACCURACY = Metric("accuracy", True, "validation accuracy")
ERROR = Metric("error", False, "error rate")


def test_tags_name_slot_and_option_and_round_trip() -> None:
    assert tag("10") == chr(0xE000 + 1) + chr(0xE000 + 16)
    assert tag("3") != tag("03")[1], "the same option in another slot is another token"
    assert untag("x" + tag("0f3a") + "=B") == "0f3a"
    with pytest.raises(ValueError, match="options 0-15"):
        tag("0g")


def test_history_characters_carry_slot_option_and_score_and_read_back() -> None:
    assert graded("10", 7) == chr(0xF0000 + 10 * 1 + 7) + chr(0xF0000 + 10 * 16 + 7)
    assert graded("1", 7) != graded("1", 6), "the same option with another score is another token"
    text = f"x {graded('0f3', 9)},{graded('120', 0)}, {tag('111')}=A;"
    assert read_history(text) == [("0f3", 9), ("120", 0)], "candidates are not history"


def test_prompt_lists_history_best_first_with_scores_0_to_9_and_labels_candidates() -> None:
    history = [("000", 0.5), ("111", 1.0), ("222", 0.9)]
    [message] = render("choice", "toy", 3, ACCURACY, history, ["012", "210"])
    assert message["role"] == "system"
    assert f"{graded('111', 9)},{graded('222', 7)},{graded('000', 0)}," in message["content"]
    assert f"{labelled('012', 'A')}=A;{labelled('210', 'B')}=B;" in message["content"]
    assert "toy" not in message["content"] and "accuracy" not in message["content"]


def test_minimised_metrics_get_9_for_the_lowest_error() -> None:
    [message] = render("choice", "toy", 2, ERROR, [("00", 0.3), ("11", 0.1)], ["01"])
    assert f"{graded('11', 9)},{graded('00', 0)}," in message["content"]


def test_a_capped_history_keeps_the_best_half_and_spreads_the_rest_down_to_the_worst() -> None:
    ranked = [(f"{i:02d}", -float(i)) for i in range(20)]  # best first
    assert [code for code, _ in spread(ranked, 6)] == ["00", "01", "02", "03", "11", "19"]
    assert spread(ranked[:5], 6) == ranked[:5]
    [message] = render("choice", "toy", 2, ACCURACY, [(code, -value) for code, value in ranked], ["01"], 6)
    assert [code for code, _ in read_history(message["content"])] == ["19", "18", "17", "16", "08", "00"]


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


def test_candidate_characters_carry_slot_option_and_label() -> None:
    assert labelled("10", "C") == chr(0x100000 + 26 * 1 + 2) + chr(0x100000 + 26 * 16 + 2)
    assert labelled("1", "A") != labelled("1", "B") and untag(labelled("0f3", "Z")) == "0f3"


def test_answer_grades_each_candidate_on_the_history_scale() -> None:
    history = [0.0, 3.0, 9.0]
    assert answer([0.0, 7.0, 4.5, 10.0, -1.0], history) == "A0B7C5D9E0", "outside the history's range: clipped"
    assert answer([0.4, 0.4], [0.3, 0.5]) == "A5B5", "equal scores share a grade, halves round up"
    assert answer([0.5, 0.1], [0.5]) == "A9B0", "an all-equal history is all best, as in the prompt"


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
    assert f"{graded('11', 9)},{graded('00', 0)}," in short["content"] and "11|1.0000,00|0.0000," in compact["content"]
    assert len(short["content"]) < len(compact["content"])
