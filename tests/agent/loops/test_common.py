"""What proposers and rankers read of the history: stopped and infeasible evaluations, several objectives."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from agent.driver import Search, SearchConfig
from agent.loops.common import Histories, scalarised_view, searcher_view
from agent.runs.store import Observation, pareto_front
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
        view, metric, limits = scalarised_view(history, objectives, random.Random(seed), "worst", "parego")
        assert metric.maximize and metric.name == "chebyshev(acc:max, params:min)" and limits == []
        scores = [o.score for o in view]
        assert scores[2] < max(scores[:2]) and scores[3] == min(scores[:3]), "infeasible reads as the worst"
    again = [o.score for o in scalarised_view(history, objectives, random.Random(3), "worst", "parego")[0]]
    assert again == [o.score for o in scalarised_view(history, objectives, random.Random(3), "worst", "parego")[0]]
    omitted, *_ = scalarised_view(history, objectives, random.Random(3), "omit", "parego")
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
        scores = [o.score for o in scalarised_view(history, objectives, random.Random(seed), "worst", "fronts")[0]]
        assert min(scores[:2]) > scores[2] > scores[3]
    parego = [o.score for o in scalarised_view(history, objectives, random.Random(1), "worst", "parego")[0]]
    fronts = [o.score for o in scalarised_view(history, objectives, random.Random(1), "worst", "fronts")[0]]
    assert fronts[:2] == parego[:2], "the front keeps ParEGO's values"


def test_the_epsilon_rule_scores_the_first_objective_inside_a_front_members_box_and_the_worst_outside():
    objectives = [Objective("acc"), Objective("params", maximize=False), Objective("ms", maximize=False)]
    history = [
        Observation(0, "00", 0.9, "ok", values=(0.9, 100.0, 5.0)),  # front
        Observation(1, "01", 0.5, "ok", values=(0.5, 10.0, 1.0)),  # front
        Observation(2, "10", 0.6, "ok", values=(0.6, 10.0, 4.0)),  # front: better acc, worse ms than 01
        Observation(3, "11", 0.2, "ok", values=(0.2, 50.0, 9.0)),  # dominated
        Observation(4, "12", 0.99, "infeasible", values=(0.99, 1.0, 1.0)),
    ]
    anchors = set()
    for seed in range(20):
        view, metric, limits = scalarised_view(history, objectives, random.Random(seed), "worst", "epsilon")
        bounds = {c.name: (c.op, c.bound) for c in limits}
        anchor = next(o for o in history[:3] if (o.values[1], o.values[2]) == (bounds["params"][1], bounds["ms"][1]))
        anchors.add(anchor.ncode)
        assert bounds["params"][0] == bounds["ms"][0] == "<=" and metric.maximize
        inside = [o.values[1] <= bounds["params"][1] and o.values[2] <= bounds["ms"][1] for o in history[:4]]
        assert [o.score for o in view[:4]] == [
            o.score if ok else 0.2 for o, ok in zip(history[:4], inside, strict=True)
        ]
        assert anchor.ncode in {o.ncode for o, ok in zip(history[:4], inside, strict=True) if ok}, (
            "the anchor is in its own box"
        )
        assert view[4].score == 0.2, "an infeasible result reads as the worst"
        assert metric.name == "acc" and metric.description.startswith("within params<=")
    assert anchors == {"00", "01", "10"}, "each front member anchors some step; a dominated point never does"
    error_first = [replace(o, score=1 - o.values[0], values=(1 - o.values[0], *o.values[1:])) for o in history]
    minimised = [Objective("error", maximize=False), *objectives[1:]]
    view, metric, _ = scalarised_view(error_first, minimised, random.Random(0), "worst", "epsilon")
    assert (metric.name, metric.maximize) == ("error", False), "the first objective in its own direction"
    assert view[4].score == pytest.approx(0.8) and all(o.score <= 0.8 + 1e-9 for o in view), "the worst is the highest"


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
