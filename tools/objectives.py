"""Several objectives and constraints: what a multi-objective run scores, and which results count.

A run's first objective is its metric (the score); the others are metrics every evaluation reports
under their names. A constraint (``params<=5e6``) names a metric, or an objective, and a bound: a
result that breaks one is recorded as ``infeasible`` with all its values, and never enters the
best or the Pareto front. The front is computed here, on utilities (higher is better whatever an
objective's direction). Searchers that rank one number read the history through a rule that changes per
decision (agent.strategies.scalarisations): a front member's box, the first objective scored within it
(the epsilon-constraint method), or the non-dominated layers (:func:`front_layers`) with, within a layer, a
random Chebyshev scalarisation (ParEGO, Knowles 2006).
"""

from __future__ import annotations

import math
import operator
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
}  # fmt: skip
CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|<|>)\s*(\S+)\s*$")
RHO = 0.05  # ParEGO's augmentation: a small share of the weighted sum breaks the Chebyshev ties


class ObjectiveError(ValueError):
    """A malformed objective or constraint; the message shows the accepted form."""


@dataclass(frozen=True)
class Objective:
    name: str
    maximize: bool = True

    def utility(self, value: float) -> float:
        return value if self.maximize else -value

    def spec(self) -> str:
        return f"{self.name}:{'max' if self.maximize else 'min'}"


@dataclass(frozen=True)
class Constraint:
    name: str
    op: str
    bound: float

    def holds(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.bound)

    def violation(self, value: float | None) -> float:
        """How far ``value`` is past the bound, as Optuna's constraints read it: positive when broken (a missing
        value breaks it by 1), zero or less when kept."""
        if value is None:
            return 1.0
        past = value - self.bound if self.op in ("<=", "<") else self.bound - value
        return past if self.holds(value) else max(past, 1e-12)

    def spec(self) -> str:
        return f"{self.name}{self.op}{self.bound:g}"


def parse_objective(text: str) -> Objective:
    """``latency_ms:min``, ``val_acc:max`` or ``val_acc`` (maximised)."""
    name, _, direction = str(text).partition(":")
    if not name.strip() or direction not in ("", "min", "max"):
        raise ObjectiveError(f"objective {text!r}: write NAME, NAME:max or NAME:min (e.g. latency_ms:min)")
    return Objective(name.strip(), direction != "min")


def parse_constraint(text: str) -> Constraint:
    """``params<=5e6``: a metric name, one of <=, >=, <, >, and a number."""
    found = CONSTRAINT.match(str(text))
    try:
        bound = float(found.group(3)) if found else math.nan
    except ValueError:
        bound = math.nan
    if found is None or not math.isfinite(bound):
        raise ObjectiveError(f"constraint {text!r}: write NAME<=NUMBER (or >=, <, >), e.g. params<=5e6")
    return Constraint(found.group(1), found.group(2), bound)


def number_of(metrics: Mapping[str, Any], name: str) -> float | None:
    """A finite number under ``name``, also written as text (a CSV table's cell); None otherwise."""
    value = metrics.get(name)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def broken(constraints: Sequence[Constraint], values: Mapping[str, Any]) -> list[str]:
    """The constraints that ``values`` break, each said with the value (a missing value breaks it too)."""
    said = []
    for constraint in constraints:
        value = number_of(values, constraint.name)
        if value is None:
            said.append(f"{constraint.name} missing (constraint {constraint.spec()})")
        elif not constraint.holds(value):
            said.append(f"{constraint.name} = {value:g} breaks {constraint.spec()}")
    return said


def broken_where_known(constraints: Sequence[Constraint], known: Mapping[str, Any]) -> list[str]:
    """The constraints on values known before evaluating that ``known`` breaks; the others wait for the result."""
    return broken([c for c in constraints if c.name in known], known)


def excess_where_known(constraints: Sequence[Constraint], known: Mapping[str, Any]) -> float:
    """How far the values known before evaluating lie past their constraints, each relative to its bound and summed:
    0 when they keep every one. A repair walks a candidate down this (agent.strategies.proposers.repaired)."""
    total = 0.0
    for constraint in constraints:
        value = number_of(known, constraint.name)
        if value is not None and not constraint.holds(value):
            total += constraint.violation(value) / (abs(constraint.bound) or 1.0)
    return total


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether utilities ``a`` are at least as good as ``b`` everywhere and better somewhere."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def pareto_indices(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (utilities); of equal points, the first."""
    front: list[int] = []
    for i, point in enumerate(points):
        if any(dominates(points[j], point) or (j < i and list(points[j]) == list(point)) for j in range(len(points))):
            continue
        front.append(i)
    return front


def front_layers(points: Sequence[Sequence[float]]) -> list[int]:
    """Each point's non-dominated layer (utilities): 0 for the Pareto front, 1 for the front of the rest, ..."""
    layer, left, depth = [0] * len(points), list(range(len(points))), 0
    while left:
        front = [left[i] for i in pareto_indices([points[j] for j in left])]
        front += [j for j in left if j not in front and any(list(points[j]) == list(points[f]) for f in front)]
        for j in front:
            layer[j] = depth
        left, depth = [j for j in left if j not in front], depth + 1
    return layer


def chebyshev_weights(count: int, rng: random.Random) -> list[float]:
    """A weight vector drawn uniformly from the simplex."""
    draws = [-math.log(1.0 - rng.random()) for _ in range(count)]
    total = sum(draws)
    return [draw / total for draw in draws]


def scalarised(points: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
    """ParEGO's augmented Chebyshev value of each point, negated so that higher is better: each utility is
    normalised to [0, 1] over ``points`` and its shortfall from the best is weighted; the worst weighted
    shortfall, plus RHO times their sum, is what a point loses."""
    lows = [min(column) for column in zip(*points, strict=True)]
    highs = [max(column) for column in zip(*points, strict=True)]
    values = []
    for point in points:
        shortfall = [(hi - u) / (hi - lo) if hi > lo else 0.0 for u, lo, hi in zip(point, lows, highs, strict=True)]
        weighted = [w * d for w, d in zip(weights, shortfall, strict=True)]
        values.append(-(max(weighted) + RHO * sum(weighted)))
    return values
