"""The near format: one candidate per prompt, its nearest history codes as (distance, grade) symbols."""

from __future__ import annotations

import pytest

from prompts.choice import tag, untag
from prompts.near import (
    answer,
    distance,
    history_grades,
    nearest,
    nearest_items,
    reference_grade,
    share_beaten,
    slot_weights,
    symbol,
    unsymbol,
)
from prompts.render import render, render_each, render_generation
from tools.evaluator import Metric

ACCURACY = Metric("accuracy", True, "validation accuracy")
ERROR = Metric("error", False, "error rate")


def test_symbols_name_distance_and_grade_and_round_trip() -> None:
    assert symbol(0, 0) == chr(0x100000) and symbol(3, 7) == chr(0x100000 + 37)
    assert unsymbol(f"x {symbol(3, 7)}{symbol(0, 9)} {tag('12')}") == [(3, 7), (0, 9)]  # others skipped
    assert unsymbol(symbol(500, 2)) == [(64, 2)]  # distances past the last symbol share it


def test_grades_are_the_share_of_the_other_history_codes_beaten() -> None:
    assert history_grades([1.0, 3.0, 2.0]) == [0, 9, 5]  # 0, 1 and 1/2 of the two others
    assert history_grades([1.0, 1.0, 2.0]) == [2, 2, 9]  # a tie counts half: 0.25 of the others
    assert history_grades([5.0]) == [9]
    assert share_beaten(2.5, [1.0, 2.0, 3.0, 4.0]) == 0.5 and share_beaten(2.0, [1.0, 2.0, 3.0, 4.0]) == 0.375
    assert answer(9.0, [1.0, 2.0]) == "9" and answer(0.0, [1.0, 2.0]) == "0" and answer(1.5, [1.0, 2.0]) == "5"


def test_nearest_codes_come_first_better_first_among_equals_and_are_capped() -> None:
    graded = [("000", 9), ("011", 4), ("001", 2), ("111", 8), ("002", 6)]
    assert distance("001", "011") == 1
    assert nearest("001", graded, 10) == [(0, 2), (1, 9), (1, 6), (1, 4), (2, 8)]
    assert unsymbol(nearest_items("001", graded, 10)) == nearest("001", graded, 10)  # the prompt shows them
    assert unsymbol(nearest_items("001", graded, 2)) == [(0, 2), (1, 9)]


# Slot 0 decides the grade (option 1: high, option 0: low); slots 1 and 2 vary without effect.
DECIDING = [("000", 0), ("011", 1), ("001", 2), ("010", 1), ("100", 8), ("111", 9), ("101", 7), ("110", 9)]


def test_slot_weights_follow_what_each_slot_explains_of_the_grades() -> None:
    full = slot_weights(DECIDING, 1.0)
    assert full is not None and sum(full) == pytest.approx(3)
    assert full[0] == pytest.approx(3) and full[1:] == [0.0, 0.0]  # the others explain nothing (adjusted)
    half = slot_weights(DECIDING, 0.5)
    assert half == pytest.approx([0.5 + 0.5 * w for w in full])  # blended with plain Hamming weights
    assert slot_weights(DECIDING, 0.0) is None  # the default: slots count alike
    assert slot_weights([(code, 5) for code, _ in DECIDING], 1.0) is None  # no grade differs


def test_no_weights_before_the_history_can_estimate_them() -> None:
    """Three two-option slots: an additive model has 4 free parameters, so 8 codes are needed."""
    assert slot_weights(DECIDING[:7], 1.0) is None and slot_weights(DECIDING, 1.0) is not None


def test_weighted_distances_round_and_keep_different_codes_apart() -> None:
    assert distance("000", "011", [3.0, 0.0, 0.0]) == 1  # differs only where nothing is explained: still not 0
    assert distance("000", "100", [3.0, 0.0, 0.0]) == 3 and distance("000", "000", [3.0, 0.0, 0.0]) == 0
    assert distance("000", "011", [1.4, 0.8, 0.8]) == 2  # 1.6, rounded


def test_weighted_prompts_bring_the_codes_that_share_the_deciding_slot_near() -> None:
    history = [(code, float(grade)) for code, grade in DECIDING]
    [plain] = render_each("near", 3, ACCURACY, history, ["112"], history_cap=8)
    [weighted] = render_each("near", 3, ACCURACY, history, ["112"], history_cap=8, slot_weighting=1.0)
    # "100" and "101" (grades 6 and 5) differ from "112" in a slot that explains nothing: distance 2, then 1;
    # "011" and "010" differ in the deciding slot: 2, then 3
    assert unsymbol(plain[0]["content"]) == [(1, 8), (1, 8), (2, 6), (2, 5), (2, 2), (2, 2), (3, 4), (3, 0)]
    assert unsymbol(weighted[0]["content"]) == [(1, 8), (1, 8), (1, 6), (1, 5), (3, 4), (3, 2), (3, 2), (3, 0)]


def test_prompt_grades_the_whole_history_and_shows_the_candidates_neighbours() -> None:
    history = [("000", 0.5), ("111", 1.0), ("222", 0.9), ("011", 0.7)]
    [message] = render("near", "toy", 3, ACCURACY, history, ["012"], history_cap=3)
    assert message["role"] == "system"
    content = message["content"]
    # grades over all four: 000 -> 0, 111 -> 9, 222 -> 6, 011 -> 3; distances from 012: 2, 2, 2, 1
    assert f": {symbol(1, 3)}{symbol(2, 9)}{symbol(2, 6)} Its score" in content
    # the candidate's own code is not shown: its options' worth differs from space to space
    assert untag(content) == "" and "toy" not in content and "accuracy" not in content
    with pytest.raises(ValueError, match="one candidate per prompt"):
        render("near", "toy", 3, ACCURACY, history, ["012", "210"])


def test_minimised_metrics_get_9_for_the_lowest_error() -> None:
    [message] = render("near", "toy", 2, ERROR, [("00", 0.3), ("11", 0.1)], ["01"])
    assert sorted(unsymbol(message["content"])) == [(1, 0), (1, 9)]


def test_reference_reads_the_nearest_codes_most() -> None:
    assert reference_grade([(1, 9), (4, 0), (4, 0)]) > 8
    assert reference_grade([(2, 3), (2, 5)]) == pytest.approx(4.0)


def test_generation_uses_the_grade_history() -> None:
    [message] = render_generation("near", "toy", 2, ACCURACY, [("00", 0.3), ("11", 0.1)], 24)
    assert (
        message["content"]
        == render_generation("grade", "toy", 2, ACCURACY, [("00", 0.3), ("11", 0.1)], 24)[0]["content"]
    )
