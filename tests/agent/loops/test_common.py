"""What proposers and rankers read of the history: stopped and infeasible evaluations, several objectives."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from agent.driver import Search, SearchConfig
from agent.loops.common import scalarised_view, searcher_view
from agent.runs.store import Observation, pareto_front
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


def test_several_objectives_read_as_one_number_that_ranks_the_front_first():
    objectives = [Objective("acc"), Objective("params", maximize=False)]
    history = [
        Observation(0, "00", 0.9, "ok", values=(0.9, 100.0)),
        Observation(1, "01", 0.5, "ok", values=(0.5, 10.0)),
        Observation(2, "10", 0.4, "ok", values=(0.4, 200.0)),  # dominated by both
        Observation(3, "11", 0.99, "infeasible", values=(0.99, 1.0)),
    ]
    assert [o.ncode for o in pareto_front(history, objectives)] == ["00", "01"]
    for seed in range(10):
        view, metric = scalarised_view(history, objectives, random.Random(seed), rule="parego")
        assert metric.maximize and metric.name == "chebyshev(acc:max, params:min)"
        scores = [o.score for o in view]
        assert scores[2] < max(scores[:2]) and scores[3] == min(scores[:3]), "infeasible reads as the worst"
    again = [o.score for o in scalarised_view(history, objectives, random.Random(3), rule="parego")[0]]
    assert again == [o.score for o in scalarised_view(history, objectives, random.Random(3), rule="parego")[0]]
    omitted, _ = scalarised_view(history, objectives, random.Random(3), infeasible_as="omit", rule="parego")
    assert [o.score for o in omitted[:3]] == again[:3] and omitted[3].score is None


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


def test_the_fronts_rule_scores_every_point_of_a_layer_above_every_later_layer():
    objectives = [Objective("acc"), Objective("params", maximize=False)]
    history = [
        Observation(0, "00", 0.9, "ok", values=(0.9, 100.0)),  # front
        Observation(1, "01", 0.5, "ok", values=(0.5, 10.0)),  # front
        Observation(2, "10", 0.8, "ok", values=(0.8, 120.0)),  # layer 1: dominated by 00 only
        Observation(3, "11", 0.1, "ok", values=(0.1, 500.0)),  # layer 2
    ]
    for seed in range(10):
        scores = [o.score for o in scalarised_view(history, objectives, random.Random(seed), rule="fronts")[0]]
        assert min(scores[:2]) > scores[2] > scores[3]
    parego = [o.score for o in scalarised_view(history, objectives, random.Random(1), rule="parego")[0]]
    fronts = [o.score for o in scalarised_view(history, objectives, random.Random(1))[0]]
    assert fronts[:2] == parego[:2], "the front keeps ParEGO's values"
