"""Results tables users already have: a YAML space plus a CSV or JSON table."""

from __future__ import annotations

import json
import random
import re

import pytest

from agent.strategies.proposers import ProposalContext, RandomProposer
from evaluators.registry import TaskOptions, make_evaluator
from evaluators.table import TableEvaluator
from tools.evaluator import EvaluatorSetupError
from tools.evaluator_tool import run_evaluation
from tools.ncode import decode, mutate, sample

SPACE_YAML = """
name: toy
slots:
  - {name: depth, options: [2, 4, 8]}
  - {name: act, options: [relu, gelu]}
  - {name: width, options: [16, 32, 64, 128]}
"""


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE_YAML)
    return str(path)


def write_csv(tmp_path, text: str, name: str = "results.csv") -> str:
    path = tmp_path / name
    path.write_text(text.lstrip())
    return str(path)


def write_json(tmp_path, data, name: str = "results.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_csv_keyed_by_ncode(tmp_path, space_file):
    data = write_csv(tmp_path, "ncode,acc,params\n000,0.5,10\n013,0.75,20\n211,0.625,30\n")
    evaluator = TableEvaluator(space_file, data, "acc")
    assert evaluator.space.members == frozenset({"000", "013", "211"})
    assert evaluator.space.size() == 3
    assert evaluator.evaluate("013").score == 0.75
    assert evaluator.evaluate("211").score == 0.625
    assert evaluator.final_metrics("211") == {"params": "30"}
    assert evaluator.metric.name == "acc"
    assert evaluator.metric.maximize
    assert decode(evaluator.space, "013") == {"depth": 2, "act": "gelu", "width": 128}


def test_json_object_keyed_by_ncode(tmp_path, space_file):
    data = write_json(tmp_path, {"101": {"loss": 1.5, "note": "a"}, "210": {"loss": 0.5}, "000": {"loss": 2}})
    evaluator = TableEvaluator(space_file, data, "loss")
    assert evaluator.space.members == frozenset({"101", "210", "000"})
    assert evaluator.evaluate("210").score == 0.5
    assert evaluator.evaluate("000").score == 2.0
    assert evaluator.final_metrics("101") == {"note": "a"}


def test_json_list_of_rows(tmp_path, space_file):
    data = write_json(tmp_path, [{"ncode": "003", "acc": 1}, {"depth": 8, "act": "relu", "width": 32, "acc": 2}])
    evaluator = TableEvaluator(space_file, data, "acc")
    assert evaluator.space.members == frozenset({"003", "201"})
    assert evaluator.evaluate("201").score == 2.0


def test_csv_with_one_column_per_slot(tmp_path, space_file):
    data = write_csv(tmp_path, "depth,act,width,acc\n2,relu,16,0.1\n8,gelu,64,0.9\n4,relu,128,0.4\n")
    evaluator = TableEvaluator(space_file, data, "acc")
    assert evaluator.space.members == frozenset({"000", "212", "103"})
    assert evaluator.evaluate("212").score == 0.9
    assert decode(evaluator.space, "212") == {"depth": 8, "act": "gelu", "width": 64}


@pytest.mark.parametrize(
    ("csv_text", "named"),
    [
        ("depth,act,width,acc\n2,relu,16,0.1\n3,relu,16,0.2\n", ["row 2", "'depth'"]),  # an unknown slot value
        ("depth,acc\n2,0.1\n", ["no 'ncode' column", "act", "width"]),  # missing slot columns
    ],
)
def test_bad_rows_are_named(tmp_path, space_file, csv_text, named):
    data = write_csv(tmp_path, csv_text)
    with pytest.raises(EvaluatorSetupError) as info:
        TableEvaluator(space_file, data, "acc")
    assert all(part in str(info.value) for part in named)


def test_minimize_direction(tmp_path, space_file):
    data = write_csv(tmp_path, "ncode,per\n000,0.3\n111,0.2\n")
    evaluator = TableEvaluator(space_file, data, "per", maximize=False)
    assert not evaluator.metric.maximize
    assert evaluator.metric.utility(0.2) > evaluator.metric.utility(0.3)
    assert "minimised" in evaluator.describe()
    via_registry = make_evaluator("table", TaskOptions(space=space_file, data=data, metric="per", minimize=True))
    assert not via_registry.metric.maximize
    assert make_evaluator("table", TaskOptions(space=space_file, data=data, metric="per")).metric.maximize


def test_rows_missing_the_metric_are_skipped(tmp_path, space_file):
    data = write_csv(tmp_path, "ncode,acc\n000,0.5\n001,\n002,n/a\n003,nan\n010,0.25\n")
    evaluator = TableEvaluator(space_file, data, "acc")
    assert evaluator.space.members == frozenset({"000", "010"})
    json_data = write_json(tmp_path, {"000": {"acc": 1}, "001": {"other": 2}, "002": {"acc": None}})
    assert TableEvaluator(space_file, json_data, "acc").space.members == frozenset({"000"})


def test_members_restrict_sampling_mutation_and_proposals(tmp_path, space_file):
    members = {"000", "001", "013", "113", "212"}
    data = write_csv(tmp_path, "ncode,acc\n" + "".join(f"{code},{i}\n" for i, code in enumerate(sorted(members))))
    evaluator = TableEvaluator(space_file, data, "acc")
    space = evaluator.space
    rng = random.Random(0)
    assert {sample(space, rng) for _ in range(200)} == members
    assert all(mutate(space, code, rng) in members for code in members for _ in range(10))
    context = ProposalContext(space, evaluator.metric, [], {"000", "212"}, random.Random(1))
    assert sorted(RandomProposer().propose(context, 10)) == ["001", "013", "113"]


def test_code_outside_the_table_is_a_failed_evaluation(tmp_path, space_file):
    data = write_csv(tmp_path, "ncode,acc\n000,0.5\n")
    evaluator = TableEvaluator(space_file, data, "acc")
    assert run_evaluation(evaluator, "000").score == 0.5
    outcome = run_evaluation(evaluator, "001")
    assert outcome.status == "failed"
    assert "not one of the 1 codes" in outcome.error


def test_missing_results_file(tmp_path, space_file):
    missing = tmp_path / "missing.csv"
    with pytest.raises(EvaluatorSetupError) as info:
        TableEvaluator(space_file, str(missing), "acc")
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)


def test_missing_space_file_is_a_setup_error(tmp_path):
    data = write_csv(tmp_path, "ncode,acc\n000,0.5\n")
    with pytest.raises(EvaluatorSetupError, match="does not exist"):
        TableEvaluator(str(tmp_path / "nope.yaml"), data, "acc")


@pytest.mark.parametrize("missing", ["space", "data", "metric"])
def test_missing_options_say_what_the_task_needs(tmp_path, space_file, missing):
    options = {"space": space_file, "data": write_csv(tmp_path, "ncode,acc\n000,1\n"), "metric": "acc"}
    options[missing] = None
    with pytest.raises(
        EvaluatorSetupError, match=re.escape("--space SPACE.yaml, --data RESULTS.csv|json and --metric NAME")
    ):
        make_evaluator("table", TaskOptions(**options))


@pytest.mark.parametrize("bad", ["0000", "300", "0x0"])
def test_bad_ncode_in_a_row_names_the_row(tmp_path, space_file, bad):
    data = write_csv(tmp_path, f"ncode,acc\n000,0.5\n001,0.5\n{bad},0.7\n")
    with pytest.raises(EvaluatorSetupError) as info:
        TableEvaluator(space_file, data, "acc")
    message = str(info.value)
    assert f"{data} row 3" in message
    assert repr(bad) in message


def test_no_numeric_metric_lists_the_columns(tmp_path, space_file):
    data = write_csv(tmp_path, "ncode,accuracy,notes\n000,0.5,x\n001,0.6,y\n")
    with pytest.raises(EvaluatorSetupError) as info:
        TableEvaluator(space_file, data, "acc")
    message = str(info.value)
    assert "no row has a numeric 'acc'" in message
    assert "accuracy" in message
    assert "notes" in message


def test_metric_column_of_text_is_not_numeric(tmp_path, space_file):
    data = write_csv(tmp_path, "ncode,acc\n000,high\n001,low\n")
    with pytest.raises(EvaluatorSetupError, match="no row has a numeric 'acc'"):
        TableEvaluator(space_file, data, "acc")


@pytest.mark.parametrize(("name", "content"), [("bad.json", "{oops"), ("list.json", "[1, 2]"), ("scalar.json", "3")])
def test_unreadable_json_is_a_setup_error(tmp_path, space_file, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(EvaluatorSetupError, match=name):
        TableEvaluator(space_file, str(path), "acc")


def test_learning_curves_are_served_epoch_by_epoch(tmp_path, space_file):
    rows = [
        {"ncode": "000", "acc": [0.1, 0.5, 0.7]}, {"ncode": "001", "acc": "[0.2, 0.3]"}, {"ncode": "010", "acc": 0.4}
    ]  # fmt: skip
    evaluator = TableEvaluator(space_file, write_json(tmp_path, rows), "acc")
    assert evaluator.max_fidelity == 3.0, "the longest curve"
    full = run_evaluation(evaluator, "000")
    assert (full.status, full.score, full.fidelity) == ("ok", 0.7, 3.0)
    assert run_evaluation(evaluator, "001").score == 0.3, "a curve written as JSON text, as in a CSV cell"
    stopped = run_evaluation(evaluator, "000", decide=lambda step, value: step >= 2)
    assert (stopped.status, stopped.score, stopped.fidelity) == ("stopped", 0.5, 2.0)
    plain = run_evaluation(evaluator, "010", decide=lambda step, value: True)
    assert (plain.status, plain.score, plain.fidelity) == ("ok", 0.4, None), "a number has no steps to stop at"


def test_rows_without_a_finite_score_are_left_out_and_counted(tmp_path, space_file, caplog):
    data = write_csv(tmp_path, "ncode,acc\n000,0.5\n001,high\n010,inf\n011,nan\n100,0.7\n")
    evaluator = TableEvaluator(space_file, data, "acc")
    assert sorted(evaluator.rows) == ["000", "100"], "text, infinity and NaN cannot be searched"
    (said,) = [record.message for record in caplog.records if "left out" in record.message]
    assert "3 of 5 rows have no finite number under 'acc'" in said


def test_a_header_only_csv_names_its_columns(tmp_path, space_file):
    with pytest.raises(EvaluatorSetupError, match=r"columns are \['acc', 'ncode'\]"):
        TableEvaluator(space_file, write_csv(tmp_path, "ncode,acc\n"), "acc")


def test_a_space_that_is_a_folder_says_so(tmp_path):
    with pytest.raises(EvaluatorSetupError, match="is a folder; pass the YAML file itself"):
        TableEvaluator(str(tmp_path), write_csv(tmp_path, "ncode,acc\n000,1\n"), "acc")


def test_known_before_columns_judge_a_constraint_without_evaluating(tmp_path, space_file):
    data = write_csv(tmp_path, "ncode,acc,params,test_acc\n000,0.5,10,0.4\n013,0.75,20,0.7\n211,0.625,,0.6\n")
    options = TaskOptions(space=space_file, data=data, metric="acc", known_before=["params"], constraint=["params<=15"])
    evaluator = make_evaluator("table", options)
    assert evaluator.known_before("013") == {"params": 20.0} and evaluator.known_before("211") == {}
    assert evaluator.broken_before("013") == ["params = 20 breaks params<=15"]
    assert evaluator.broken_before("000") == [] and evaluator.broken_before("211") == [], "unknown: wait for it"
    unconstrained = make_evaluator("table", TaskOptions(space=space_file, data=data, metric="acc"))
    assert unconstrained.known_before("013") == {} and unconstrained.broken_before("013") == []


@pytest.mark.parametrize(
    ("column", "named"),
    [("acc", "that is the metric the search optimises"), ("flops", "no row of .* has a number under 'flops'")],
)
def test_a_known_before_column_that_cannot_be_known_is_named(tmp_path, space_file, column, named):
    data = write_csv(tmp_path, "ncode,acc,params\n000,0.5,10\n013,0.75,20\n")
    with pytest.raises(EvaluatorSetupError, match=f"--known-before {column}: {named}"):
        TableEvaluator(space_file, data, "acc", known_before=[column])
