"""The paper and compact prompt formats: history best first, capped, scores on a higher-is-better scale."""

from __future__ import annotations

import pytest

from prompts.render import render
from tools.evaluator import Metric

ACCURACY = Metric("accuracy", True, "validation accuracy")
ERROR = Metric("error", False, "error rate")
HISTORY = [("000", 0.5), ("111", 1.0), ("222", 0.9)]


def test_compact_is_one_system_message_with_normalised_scores_best_first() -> None:
    [message] = render("compact", "toy", 3, ACCURACY, HISTORY, ["012", "210"])
    assert message["role"] == "system"
    assert "111|1.0000,222|0.8000,000|0.0000," in message["content"]
    assert "012;210;" in message["content"] and "toy" in message["content"]


def test_paper_is_one_user_message_with_raw_scores_and_minimised_metrics_negated() -> None:
    [message] = render("paper", "toy", 2, ERROR, [("00", 0.3), ("11", 0.1)], ["01", "10"])
    assert message["role"] == "user"
    content = message["content"]
    assert content.index("NCode: 11, error: -0.1000;") < content.index("NCode: 00, error: -0.3000;")
    assert content.endswith("Candidate:\n01\n10") and "lower error is better" in content


def test_history_cap_keeps_the_best() -> None:
    [message] = render("compact", "toy", 3, ACCURACY, HISTORY, ["012"], history_cap=2)
    assert "111|" in message["content"] and "222|" in message["content"] and "000|" not in message["content"]


def test_unknown_format_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="paper, compact, choice"):
        render("yaml", "toy", 3, ACCURACY, HISTORY, ["012"])
