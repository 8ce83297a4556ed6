"""Objectives, constraints, the Pareto front and the per-step scalarisation, as pure functions."""

from __future__ import annotations

import random

import pytest

from tools.objectives import (
    Objective,
    ObjectiveError,
    broken,
    chebyshev_weights,
    dominates,
    excess_where_known,
    front_layers,
    pareto_indices,
    parse_constraint,
    parse_objective,
    scalarised,
)


def test_objectives_and_constraints_parse_and_say_the_accepted_form() -> None:
    assert parse_objective("latency_ms:min") == Objective("latency_ms", False)
    assert parse_objective("val_acc") == parse_objective("val_acc:max") == Objective("val_acc", True)
    constraint = parse_constraint(" params <= 5e6 ")
    assert (constraint.name, constraint.op, constraint.bound) == ("params", "<=", 5e6)
    assert constraint.spec() == "params<=5e+06"
    assert parse_constraint("flops>1").holds(2) and not parse_constraint("flops>1").holds(1)
    for bad in ("latency:fast", ":min", ""):
        with pytest.raises(ObjectiveError, match="NAME:min"):
            parse_objective(bad)
    for bad in ("params=5", "params<=", "params<=x", "<=5", "params<=nan"):
        with pytest.raises(ObjectiveError, match="NAME<=NUMBER"):
            parse_constraint(bad)


def test_broken_names_each_constraint_with_its_value_and_a_missing_value_breaks_it() -> None:
    limits = [parse_constraint("params<=100"), parse_constraint("acc>=0.5")]
    assert broken(limits, {"params": 100, "acc": 0.5}) == []
    assert broken(limits, {"params": 250, "acc": float("nan")}) == [
        "params = 250 breaks params<=100", "acc missing (constraint acc>=0.5)",
    ]  # fmt: skip


def test_the_excess_sums_how_far_known_values_lie_past_their_bounds_relative_to_each() -> None:
    limits = [parse_constraint("params<=100"), parse_constraint("acc>=0.5"), parse_constraint("flops<0")]
    assert excess_where_known(limits, {"params": 100, "acc": 0.9, "flops": -1}) == 0.0
    assert excess_where_known(limits, {"params": 250}) == pytest.approx(1.5), "unknown values wait for the result"
    assert excess_where_known(limits, {"params": 150, "acc": 0.25}) == pytest.approx(0.5 + 0.5)
    assert excess_where_known(limits, {"flops": 2}) == pytest.approx(2.0), "a bound of 0 counts in its own units"


def test_the_pareto_front_keeps_the_non_dominated_and_the_first_of_equals() -> None:
    points = [(1, 5), (2, 4), (2, 4), (1, 1), (3, 1), (0, 6), (2, 3)]
    assert pareto_indices(points) == [0, 1, 4, 5]
    assert dominates((2, 4), (2, 3)) and not dominates((2, 4), (2, 4)) and not dominates((3, 1), (1, 5))
    assert pareto_indices([(1.0,), (3.0,), (2.0,)]) == [1], "one objective: the best"


def test_the_scalarisation_ranks_the_front_first_and_follows_its_weights() -> None:
    points = [(0.9, -10.0), (0.5, -1.0), (0.4, -20.0)]  # utilities; the last is dominated by both others
    for seed in range(20):
        weights = chebyshev_weights(2, random.Random(seed))
        assert sum(weights) == pytest.approx(1.0) and min(weights) > 0
        values = scalarised(points, weights)
        assert values[2] < max(values[0], values[1]), "a dominated point never scores best"
    assert scalarised(points, [0.99, 0.01]).index(max(scalarised(points, [0.99, 0.01]))) == 0
    assert scalarised(points, [0.01, 0.99]).index(max(scalarised(points, [0.01, 0.99]))) == 1


def test_front_layers_peel_the_pareto_front_off_layer_by_layer():
    points = [(3, 1), (1, 3), (2, 2), (1, 1), (0, 0), (2, 2), (0, 3)]
    assert front_layers(points) == [0, 0, 0, 1, 2, 0, 1], "equal points share a layer; (0, 3) is beaten by (1, 3)"
    assert front_layers([]) == []
