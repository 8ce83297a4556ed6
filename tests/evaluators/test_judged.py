"""Every task judged against further objectives and constraints: values collected, constraints applied."""

from __future__ import annotations

import json
import shlex
import sys

import pytest

import evaluators.judged
from evaluators.judged import JudgedEvaluator
from evaluators.registry import TaskOptions, make_evaluator
from tests.agent.objectives import space_definition
from tools.evaluator import EvaluatorSetupError
from tools.evaluator_tool import run_evaluation


def objective_task(objective, objectives=(), constraint=()) -> JudgedEvaluator:
    options = TaskOptions(space=space_definition(), objective=objective, metric="acc", objectives=list(objectives),
                          constraint=list(constraint))  # fmt: skip
    evaluator = make_evaluator("objective", options)
    assert isinstance(evaluator, JudgedEvaluator)
    return evaluator


def test_values_are_collected_and_a_broken_constraint_is_infeasible_with_its_values() -> None:
    def measure(config: dict) -> dict:
        return {"acc": 0.5 + 0.1 * config["depth"], "params": config["depth"] * config["width"]}

    evaluator = objective_task(measure, ["params:min"], ["params<=100"])
    assert [o.spec() for o in evaluator.objectives] == ["acc:max", "params:min"]
    kept = run_evaluation(evaluator, "010")  # depth 1, width 32
    assert (kept.status, kept.values) == ("ok", (0.6, 32.0))
    broke = run_evaluation(evaluator, "330")  # depth 8, width 128
    assert (broke.status, broke.score, broke.values) == ("infeasible", pytest.approx(1.3), (pytest.approx(1.3), 1024.0))
    assert broke.error == "params = 1024 breaks params<=100"


def test_a_missing_objective_fails_the_evaluation_naming_how_to_report_it() -> None:
    outcome = run_evaluation(objective_task(lambda config: {"acc": 0.5}, ["latency_ms:min"]), "000")
    assert outcome.status == "failed" and "reported nothing under 'latency_ms'" in outcome.error
    assert "'latency_ms: NUMBER'" in outcome.error


def test_an_evaluation_may_say_it_is_infeasible_itself() -> None:
    """``feasible: false`` among its metrics, in any run: judged or not."""

    def reported(config: dict) -> dict:
        return {"acc": 0.9, "params": 1, "feasible": config["depth"] != 1}

    plain = make_evaluator("objective", TaskOptions(space=space_definition(), objective=reported, metric="acc"))
    for evaluator in (plain, objective_task(reported, ["params:min"])):
        outcome = run_evaluation(evaluator, "000")
        assert (outcome.status, outcome.score, outcome.error) == (
            "infeasible", 0.9, "the evaluation reported feasible: false"
        )  # fmt: skip
        assert run_evaluation(evaluator, "100").status == "ok"


def test_a_table_shows_the_columns_an_objective_names(tmp_path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("name: t\nslots:\n  - {name: a, options: [1, 2]}\n")
    (tmp_path / "t.json").write_text(json.dumps([{"a": 1, "acc": 0.5, "params": 10, "test_acc": 0.4},
                                                 {"a": 2, "acc": 0.7, "params": 90, "test_acc": 0.6}]))  # fmt: skip
    options = TaskOptions(space=str(space), data=str(tmp_path / "t.json"), metric="acc", objectives=["params:min"])
    evaluator = make_evaluator("table", options)
    outcome = run_evaluation(evaluator, "1")
    assert outcome.values == (0.7, 90.0) and "test_acc" not in outcome.metrics, "only what an objective names"
    assert evaluator.rows is evaluator.inner.rows, "the task's own attributes read through"


def test_a_command_prints_its_other_objectives_as_text_lines(tmp_path) -> None:
    script = tmp_path / "train.py"
    script.write_text("print('latency_ms: 12.5')\nprint('val_acc: 0.8')\n")
    space = tmp_path / "space.yaml"
    space.write_text("name: t\nslots:\n  - {name: a, options: [1, 2]}\n")
    options = TaskOptions(space=str(space), command=f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}",
                          metric="val_acc", objectives=["latency_ms:min"], workdir=str(tmp_path / "w"))  # fmt: skip
    assert run_evaluation(make_evaluator("command", options), "0").values == (0.8, 12.5)


@pytest.mark.parametrize(
    ("objectives", "constraint", "error"),
    [(["acc:min"], [], "name one metric twice"), (["params:fast"], [], "NAME:min"), ([], ["params<5e"], "NAME<=")],
)
def test_bad_objectives_and_constraints_are_refused_before_the_search(objectives, constraint, error) -> None:
    with pytest.raises(EvaluatorSetupError, match=error):
        objective_task(lambda config: 1.0, objectives, constraint)


def test_a_known_before_function_judges_constraints_before_and_fills_what_the_result_lacks(caplog) -> None:
    calls: list[dict] = []

    def accuracy_only(config: dict) -> float:
        calls.append(config)
        return 0.5

    options = TaskOptions(
        space=space_definition(), objective=accuracy_only, metric="acc", objectives=["params:min"],
        constraint=["params<=5000"], known_before=["tests.agent.objectives:parameter_count"],
    )  # fmt: skip
    evaluator = make_evaluator("objective", options)
    assert evaluator.known_before("330") == {"params": 131072.0}
    assert evaluator.broken_before("330") == ["params = 131072 breaks params<=5000"] and not calls, "nothing trained"
    assert evaluator.broken_before("010") == []
    outcome = run_evaluation(evaluator, "010")
    assert (outcome.status, outcome.values) == ("ok", (0.5, 1024.0)), "the objective's missing value is the known one"
    failing = make_evaluator("objective", TaskOptions(
        space=space_definition(), objective=accuracy_only, metric="acc", constraint=["params<=100"],
        known_before=["tests.agent.objectives:broken_count"],
    ))  # fmt: skip
    assert failing.broken_before("330") == [] and failing.broken_before("010") == []
    assert caplog.text.count("--known-before tests.agent.objectives:broken_count failed on 330") == 1


def test_a_codes_known_values_are_computed_once_however_often_a_pool_asks() -> None:
    from tests.agent import objectives

    options = TaskOptions(
        space=space_definition(), objective=lambda config: 0.5, metric="acc", constraint=["params<=5000"],
        known_before=["tests.agent.objectives:counted_parameters"],
    )  # fmt: skip
    evaluator = make_evaluator("objective", options)
    objectives.COUNTED.clear()
    for _ in range(3):
        assert evaluator.broken_before("330") == ["params = 131072 breaks params<=5000"]
        assert evaluator.known_before("010") == {"params": 1024.0}
    assert len(objectives.COUNTED) == 2


def test_the_known_values_kept_are_bounded_and_the_oldest_dropped_first(monkeypatch) -> None:
    from tests.agent import objectives

    monkeypatch.setattr(evaluators.judged, "KNOWN_KEPT", 4)
    options = TaskOptions(
        space=space_definition(), objective=lambda config: 0.5, metric="acc", constraint=["params<=5000"],
        known_before=["tests.agent.objectives:counted_parameters"],
    )  # fmt: skip
    evaluator = make_evaluator("objective", options)
    objectives.COUNTED.clear()
    codes = ["000", "010", "020", "030", "100"]  # the fifth drops the first two
    for code in codes:
        evaluator.known_before(code)
    assert len(evaluator._known) == 3
    evaluator.known_before("020")
    assert len(objectives.COUNTED) == 5, "a code still kept is not computed again"
    evaluator.known_before("000")
    assert len(objectives.COUNTED) == 6, "a dropped one is"


@pytest.mark.parametrize(
    ("known", "named"),
    [("params", "--known-before params names a table column, which only --task table has; for --task objective"),
     ("tests.agent.objectives:nothing_here", "module 'tests.agent.objectives' has no 'nothing_here'"),
     ("tests.agent.objectives:DEPTHS", "--known-before tests.agent.objectives:DEPTHS is not a function")],
)  # fmt: skip
def test_a_known_before_that_cannot_be_used_is_named(known, named) -> None:
    options = TaskOptions(space=space_definition(), objective=lambda config: 0.5, metric="acc",
                          constraint=["params<=100"], known_before=[known])  # fmt: skip
    with pytest.raises(EvaluatorSetupError, match=named.replace("(", r"\(")):
        make_evaluator("objective", options)
