"""The grade format: one candidate per prompt, history characters that carry their code's score."""

from __future__ import annotations

import pytest

from prompts.choice import tag, untag
from prompts.grade import answer, parse_grade, scored, spread, unscored
from prompts.render import render, render_generation
from tools.evaluator import Metric

ACCURACY = Metric("accuracy", True, "validation accuracy")
ERROR = Metric("error", False, "error rate")


def test_scored_characters_name_slot_option_and_grade_and_round_trip() -> None:
    assert scored("10", 7) == chr(0xF0000 + 10 * 1 + 7) + chr(0xF0000 + 10 * 16 + 7)
    assert scored("10", 7) != scored("10", 6) and scored("1", 7) != scored("01", 7)[1]
    assert unscored(f"x{scored('0f3a', 4)},{scored('12', 0)}, Code: {tag('33')}") == [("0f3a", 4), ("12", 0)]


def test_prompt_grades_history_0_to_9_best_first_and_asks_about_one_code() -> None:
    history = [("000", 0.5), ("111", 1.0), ("222", 0.9)]
    [message] = render("grade", "toy", 3, ACCURACY, history, ["012"])
    assert message["role"] == "system"
    assert f"{scored('111', 9)},{scored('222', 7)},{scored('000', 0)}, Code: {tag('012')} " in message["content"]
    assert untag(message["content"].split("Code: ")[1]) == "012"
    assert "toy" not in message["content"] and "accuracy" not in message["content"]
    with pytest.raises(ValueError, match="one candidate per prompt"):
        render("grade", "toy", 3, ACCURACY, history, ["012", "210"])


def test_minimised_metrics_get_9_for_the_lowest_error() -> None:
    [message] = render("grade", "toy", 2, ERROR, [("00", 0.3), ("11", 0.1)], ["01"])
    assert unscored(message["content"]) == [("11", 9), ("00", 0)]


def test_a_long_history_shows_its_best_half_then_spreads_down_to_the_worst() -> None:
    pairs = [(f"{i:02d}", 100.0 - i) for i in range(40)]  # best first
    shown = spread(pairs, 8)
    assert [code for code, _ in shown[:4]] == ["00", "01", "02", "03"]
    assert shown[-1] == pairs[-1] and len(shown) == 8
    assert [value for _, value in shown] == sorted((value for _, value in shown), reverse=True)
    assert spread(pairs[:5], 8) == pairs[:5]
    history = [(code, value) for code, value in reversed(pairs)]
    [message] = render("grade", "toy", 2, ACCURACY, history, ["00"], history_cap=8)
    assert [code for code, _ in unscored(message["content"])] == [code for code, _ in shown]


def test_answer_is_the_candidates_place_on_the_shown_scale_clipped() -> None:
    assert answer(0.5, [0.0, 1.0]) == "5" and answer(2.0, [0.0, 1.0]) == "9" and answer(-1.0, [0.0, 1.0]) == "0"
    assert answer(3.0, [3.0, 3.0]) == "9"


@pytest.mark.parametrize(("text", "grade"), [("7", 7), (" 7</s>", 7), ("grade 3, not 4", 3), ("", None), ("x", None)])
def test_parse_grade_reads_the_first_digit(text: str, grade: int | None) -> None:
    assert parse_grade(text) == grade


def test_generation_prompt_uses_scored_history() -> None:
    [message] = render_generation("grade", "toy", 2, ACCURACY, [("00", 0.3), ("11", 0.1)], 10)
    assert unscored(message["content"]) == [("00", 9), ("11", 0)]
    assert message["content"].endswith("A new code likely to score 9:")
