"""The evaluator tool: every failure of an evaluation becomes a recorded outcome, never a crash."""

from __future__ import annotations

import math

import pytest

from tools.evaluator import Evaluator, Metric, Outcome
from tools.evaluator_tool import make_evaluator_tool, run_evaluation
from tools.ncode import SearchSpace, Slot, to_indices


class FakeEvaluator(Evaluator):
    """Scores a 2-slot space by the sum of option indices, or misbehaves as told."""

    def __init__(self, behaviour=None) -> None:
        self.space = SearchSpace("toy", (Slot("a", (0, 1, 2)), Slot("b", ("x", "y", "z"))))
        self.metric = Metric("score")
        self.behaviour = behaviour
        self.calls: list[str] = []

    def evaluate(self, ncode: str) -> Outcome:
        self.calls.append(ncode)
        if self.behaviour is not None:
            return self.behaviour(ncode)
        return Outcome(float(sum(to_indices(self.space, ncode))), metrics={"code": ncode})


def invoke(evaluator: Evaluator, ncode: str, simulated_cost_s: float = 0.0) -> dict:
    return make_evaluator_tool(evaluator, simulated_cost_s).invoke({"ncode": ncode})


def test_tool_describes_itself():
    tool = make_evaluator_tool(FakeEvaluator())
    assert tool.name == "evaluate_toy"
    assert "toy" in tool.description
    assert "ncode" in tool.args


def test_ok_outcome():
    evaluator = FakeEvaluator()
    result = invoke(evaluator, "12")
    assert result["status"] == "ok"
    assert result["score"] == 3.0
    assert result["metrics"] == {"code": "12"}
    assert result["error"] is None
    assert result["cost_s"] >= 0
    assert evaluator.calls == ["12"]


def raise_error(ncode: str) -> Outcome:
    raise RuntimeError(f"CUDA exploded on {ncode}")


def raise_memory(ncode: str) -> Outcome:
    raise MemoryError


@pytest.mark.parametrize(
    ("behaviour", "expected_error"),
    [
        (raise_error, "RuntimeError: CUDA exploded on 01"),
        (raise_memory, "out of memory"),
        (lambda code: Outcome(math.nan), "score is nan"),
        (lambda code: Outcome(math.inf), "score is inf"),
        (lambda code: Outcome(None), "score is None"),
        (lambda code: None, "AttributeError"),
    ],
    ids=["raises", "memory", "nan", "inf", "none_score", "returns_none"],
)
def test_failures_become_failed_outcomes(behaviour, expected_error):
    result = invoke(FakeEvaluator(behaviour), "01")
    assert result["status"] == "failed"
    assert result["score"] is None
    assert expected_error in result["error"]
    assert result["cost_s"] >= 0


def test_exception_error_says_where_it_happened():
    outcome = run_evaluation(FakeEvaluator(raise_error), "01")
    assert outcome.status == "failed"
    assert __file__.rsplit("/", 1)[-1] in outcome.error


def test_nan_keeps_the_other_metrics():
    outcome = run_evaluation(FakeEvaluator(lambda code: Outcome(math.nan, {"loss": 1.5})), "00")
    assert outcome.status == "failed"
    assert outcome.metrics == {"loss": 1.5}


def test_infeasible_outcome_passes_through():
    outcome = run_evaluation(FakeEvaluator(lambda code: Outcome(None, status="infeasible", error="too big")), "00")
    assert outcome.status == "infeasible"
    assert outcome.error == "too big"


@pytest.mark.parametrize("code", ["3", "0x", "013", "", "0!"])
def test_invalid_ncode_is_a_failed_outcome_without_calling_the_evaluator(code):
    evaluator = FakeEvaluator()
    result = invoke(evaluator, code)
    assert result["status"] == "failed"
    assert result["score"] is None
    assert "InvalidNCode" in result["error"]
    assert evaluator.calls == []


def test_non_member_code_is_a_failed_outcome():
    evaluator = FakeEvaluator()
    evaluator.space = SearchSpace("toy", evaluator.space.slots, members=frozenset({"00", "11"}))
    assert invoke(evaluator, "11")["status"] == "ok"
    result = invoke(evaluator, "12")
    assert result["status"] == "failed"
    assert "not one of the 2 codes" in result["error"]
    assert evaluator.calls == ["11"]


@pytest.mark.parametrize("behaviour", [None, raise_error], ids=["ok", "failed"])
def test_simulated_cost_pads_the_evaluation(behaviour):
    result = invoke(FakeEvaluator(behaviour), "22", simulated_cost_s=0.05)
    assert result["cost_s"] >= 0.05


def test_reported_cost_of_the_evaluator_is_kept():
    outcome = run_evaluation(FakeEvaluator(lambda code: Outcome(1.0, cost_s=123.0)), "00")
    assert outcome.cost_s == 123.0
