"""Scalarisations: every rule by the same contract, then what each one specifically promises."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from agent.runs.store import Observation, pareto_front
from agent.strategies.scalarisations import RULES, scalarised_view
from tools.objectives import Objective, dominates


def random_points(seed: int, count: int, dimensions: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[round(rng.random(), 2) for _ in range(dimensions)] for _ in range(count)]


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("dimensions", [2, 3])
def test_scalarisation_contract(rule, dimensions):
    """One score per point, fixed by the rng; a point never scores above one that dominates it; limits, where a rule
    sets any, on the other objectives only, kept by some front member."""
    objectives = [Objective("a"), *(Objective(f"o{i}", maximize=bool(i % 2)) for i in range(1, dimensions))]
    for seed in range(20):
        points = random_points(seed, 12, dimensions)
        scores = RULES[rule].scores(points, objectives, random.Random(seed))
        assert len(scores.values) == len(points)
        assert scores == RULES[rule].scores(points, objectives, random.Random(seed))
        for a, b in ((a, b) for a in range(len(points)) for b in range(len(points))):
            if dominates(points[a], points[b]):
                assert scores.values[a] >= scores.values[b], (seed, points[a], points[b])
        assert {c.name for c in scores.limits} <= {o.name for o in objectives[1:]}
        at = {o.name: i for i, o in enumerate(objectives)}
        assert any(all(c.holds(objectives[at[c.name]].utility(p[at[c.name]])) for c in scores.limits) for p in points)
    assert RULES[rule].scores([], objectives, random.Random(0)).values == []


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
