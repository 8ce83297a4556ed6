"""Scalarisations: how a run of several objectives reads as the one number rankers and proposers are trained on.

Contract: ``scores(points, objectives, rng)`` takes the utilities of each finished, feasible result (higher is
better in every objective), draws what it needs for this step from ``rng``, and returns one score per point
(higher is better), the metric the rankers are shown, and the step's own limits on the other objectives (only the
box has any). Rules are interchangeable; :func:`scalarised_view` applies one to a history. BENCHMARKS.md §10
measures them, and the run's ``--scalarisation auto`` chooses between two of them per step (agent.loops.common).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace

from agent.runs.store import Observation
from tools.evaluator import Metric
from tools.objectives import Constraint, Objective, chebyshev_weights, front_layers, pareto_indices, scalarised

Points = Sequence[Sequence[float]]


@dataclass(frozen=True)
class Scores:
    values: list[float]  # one per point, higher is better
    metric: Metric  # what the rankers are told they read
    limits: list[Constraint]  # the step's own limits on the other objectives, in their units


class Scalarisation(ABC):
    name: str

    @abstractmethod
    def scores(self, points: Points, objectives: Sequence[Objective], rng: random.Random) -> Scores: ...


class ParEGO(Scalarisation):
    """ParEGO's augmented Chebyshev value (Knowles 2006), with weights drawn afresh for each step."""

    name = "parego"

    def scores(self, points: Points, objectives: Sequence[Objective], rng: random.Random) -> Scores:
        weights = chebyshev_weights(len(objectives), rng)
        values = scalarised(points, weights) if points else []
        names = ", ".join(objective.spec() for objective in objectives)
        weighted = f"ParEGO scalarisation, weights {[round(w, 3) for w in weights]}"
        return Scores(self.layered(values, points), Metric(f"chebyshev({names})", True, weighted), [])

    def layered(self, values: list[float], points: Points) -> list[float]:
        return values


class Fronts(ParEGO):
    """The non-dominated layer first (the front scores above every other point), ParEGO's value within a layer."""

    name = "fronts"

    def layered(self, values: list[float], points: Points) -> list[float]:
        # ParEGO's values lie in [-(1 + RHO), 0]: layers 2 apart outrank every later one
        return [value - 2.0 * layer for value, layer in zip(values, front_layers(points), strict=True)]


class Epsilon(Scalarisation):
    """The epsilon-constraint method: a front member drawn for the step sets a box (each other objective at least
    as good as its own), and the score is the first objective inside it, in its own units and direction, and the
    worst value outside. A step then looks for a result that beats that member in its own box. Before any result
    there is nothing to draw from, and it reads as ParEGO."""

    name = "epsilon"

    def scores(self, points: Points, objectives: Sequence[Objective], rng: random.Random) -> Scores:
        if not points:
            return ParEGO().scores(points, objectives, rng)
        anchor = points[rng.choice(pareto_indices(points))]
        inside = [all(u >= a for u, a in zip(p[1:], anchor[1:], strict=True)) for p in points]
        lowest = min(p[0] for p in points)
        values = [p[0] if ok else lowest for p, ok in zip(points, inside, strict=True)]
        limits = [
            Constraint(o.name, ">=" if o.maximize else "<=", o.utility(a))
            for o, a in zip(objectives[1:], anchor[1:], strict=True)
        ]
        within = ", ".join(c.spec() for c in limits)
        first = objectives[0]
        return Scores(values, Metric(first.name, first.maximize, f"within {within}; outside, the worst value"), limits)


RULES: dict[str, Scalarisation] = {rule.name: rule for rule in (Epsilon(), Fronts(), ParEGO())}


def scalarised_view(
    history: Sequence[Observation],
    objectives: Sequence[Objective],
    rng: random.Random,
    infeasible_as: str,
    rule: str,
) -> tuple[list[Observation], Metric, list[Constraint]]:
    """The history with one number per evaluation under ``rule``, the metric it reads in, and the step's limits. A
    stopped result (it has no objective values) reads as the worst score, so rankers learn to avoid its
    neighbourhood; so does an infeasible one, or it has no score with ``infeasible_as="omit"``."""
    scored = [o for o in history if o.values is not None and o.status == "ok"]
    points = [[objective.utility(v) for objective, v in zip(objectives, o.values, strict=True)] for o in scored]
    scores = RULES[rule].scores(points, objectives, rng)
    scalar = dict(zip((o.ncode for o in scored), scores.values, strict=True))
    worst = min(scalar.values()) if scalar else None
    view = []
    for o in history:
        shown_worst = o.status == "stopped" or (o.status == "infeasible" and infeasible_as == "worst")
        score = scalar.get(o.ncode, worst if shown_worst else None)  # a utility, shown in the metric's direction
        view.append(replace(o, score=None if score is None else round(scores.metric.utility(score), 6)))
    return view, scores.metric, scores.limits
