"""What proposers and rankers read of the history: stopped and infeasible evaluations, and the pools a run of several
objectives and constraints draws."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from agent.driver import Search, SearchConfig
from agent.loops.common import Histories, searcher_view
from agent.runs.store import Observation
from agent.strategies.scalarisations import scalarised_view
from evaluators.nas_bench_graph import NasBenchGraphEvaluator
from tools.evaluator import Metric
from tools.objectives import Objective

ACC = Metric("acc")
HISTORY = [
    Observation(0, "00", 0.8, "ok", fidelity=9),
    Observation(1, "01", 0.3, "stopped", fidelity=1),
    Observation(2, "10", 0.6, "ok", fidelity=9),
    Observation(3, "11", 0.7, "stopped", fidelity=3),  # above the worst finished score: shown as that with worst
    Observation(4, "20", 0.95, "infeasible", values=(0.95,)),
    Observation(5, "21", None, "failed"),
]


@pytest.mark.parametrize(
    ("stopped_as", "scores"),
    [("last", [0.8, 0.3, 0.6, 0.7, 0.6, None]), ("worst", [0.8, 0.3, 0.6, 0.6, 0.6, None]),
     ("omit", [0.8, None, 0.6, None, 0.6, None])],
)  # fmt: skip
def test_stopped_as_each_rule_says_and_an_infeasible_result_reads_as_the_worst_finished(stopped_as, scores):
    view = searcher_view(HISTORY, ACC, stopped_as)
    assert [o.score for o in view] == scores
    assert [o.status for o in view] == [o.status for o in HISTORY] and view[4].values == (0.95,)


def test_infeasible_as_omit_shows_an_infeasible_result_without_a_score():
    view = searcher_view(HISTORY, ACC, "last", infeasible_as="omit")
    assert view[4].score is None and view[4].status == "infeasible" and view[4].values == (0.95,)
    assert [o.score for o in view[:4]] == [0.8, 0.3, 0.6, 0.7]


@pytest.mark.parametrize("ranker", ["random", "inprocess", "tpe"])
def test_a_code_known_to_break_a_constraint_is_never_proposed(tmp_path, ranker):
    """NAS-Bench-Graph knows each code's parameter count before evaluating it: under a limit at about the median,
    a pool of any proposer holds only codes that keep it, so no evaluation is spent on an infeasible one (by chance,
    30 in a row would happen about once in 2**30)."""
    search = Search(tmp_path / "runs.db")
    config = SearchConfig(ranker=ranker, budget=30, seed=3, constraint=["params_m<=1.28"])
    search.start(config, run_id="r")
    statuses = [o.status for _, o in search.store.observations("r")]
    assert len(statuses) == 30 and set(statuses) == {"ok"}
    search.start(replace(config, evaluate_known_infeasible=True), run_id="control")
    assert "infeasible" in [o.status for _, o in search.store.observations("control")], "as Optuna would"


def test_a_constraint_nothing_keeps_still_spends_the_budget_and_says_so(tmp_path, caplog):
    search = Search(tmp_path / "runs.db")
    search.start(SearchConfig(ranker="random", budget=4, constraint=["params_m<=0"]), run_id="r")
    assert [o.status for _, o in search.store.observations("r")] == ["infeasible"] * 4
    assert "none of 200 proposed codes keeps the constraints known before evaluation (params_m = " in caplog.text


def test_under_the_epsilon_rule_every_pool_keeps_the_steps_limits_where_the_task_knows_them_before(tmp_path):
    """NAS-Bench-Graph knows latency and parameters before evaluating: each step's pool holds only candidates inside
    the box its drawn front member sets, so the ranker chooses among codes that can beat that member."""
    search = Search(tmp_path / "runs.db")
    config = SearchConfig(
        ranker="nearest-mean", budget=12, seed=5, metric="val_acc", objectives=["latency_s:min", "params_m:min"],
        scalarisation="epsilon",
    )  # fmt: skip
    search.start(config, run_id="r")
    history = Histories(search.store)("r")
    objectives = [Objective("val_acc"), Objective("latency_s", False), Objective("params_m", False)]
    known = NasBenchGraphEvaluator("cora").known_before
    checked = 0
    for decision in search.store.decisions("r"):
        step = decision["iteration"]
        before = [o for o in history if o.iteration < step]
        _, _, limits = scalarised_view(before, objectives, random.Random(f"5/{step}/weights"), "worst", "epsilon")
        for code in json.loads(decision["pool"]):
            values = known(code)
            assert all(c.holds(values[c.name]) for c in limits), (step, code, limits)
            checked += bool(limits)
    assert checked >= 50, "the pools after the first step were checked against a box"
