"""What every evaluator is: a space, a metric, and a way to turn an NCode into a score."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tools.ncode import SearchSpace
from tools.objectives import Objective
from tools.reporting import Reporter


class EvaluatorSetupError(ValueError):
    """A task that cannot start (missing file, bad path); raised before the search begins, or once its first
    evaluations show that it never reports a value the run needs."""


UNREPORTED = "reported nothing under"  # in the error of an evaluation that ended without a value the run needs


def unreported(name: str, how: str) -> str:
    """The error of an evaluation that ran to its end without reporting ``name``. A task that never reports it
    fails every configuration alike, which the search loops notice (agent.loops.common.never_reported)."""
    return f"{UNREPORTED} {name!r}: {how}"


@dataclass(frozen=True)
class Metric:
    """The number a search optimises. ``maximize=False`` for errors such as PER."""

    name: str
    maximize: bool = True
    description: str = ""

    def utility(self, score: float) -> float:
        """Higher is better, whatever the metric's direction."""
        return score if self.maximize else -score


@dataclass
class Outcome:
    """What one evaluation produced; failures are outcomes too, never crashes."""

    score: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    cost_s: float = 0.0
    status: str = "ok"  # ok | failed | infeasible | stopped (a scheduler ended it early: score is its last report)
    error: str | None = None
    fidelity: float | None = None  # the step (epoch, ...) the score was measured at; None: the task has no steps
    values: tuple[float, ...] | None = None  # a run of several objectives: each one's value, the score first


class Evaluator(ABC):
    """Turns NCodes of ``space`` into scores of ``metric``.

    ``evaluate`` may raise; the evaluator tool turns exceptions into failed outcomes.
    ``final_metrics`` gives what the searcher must not see while searching (for
    example NAS-Bench-201 test accuracy) for the final report.

    An evaluator that trains step by step overrides :meth:`evaluate_reporting` instead, telling the
    search each intermediate value (``reporter.report(value, step)``) and ending early when
    ``reporter.should_stop()``; it declares ``max_fidelity`` (the last step) when it knows it.
    """

    space: SearchSpace
    metric: Metric
    max_fidelity: float | None = None  # the step a full evaluation ends at, when the task knows it
    # The task option (evaluators.registry.TaskOptions) that says how long one evaluation trains: "fidelity"
    # (command, objective) or "steps" (the LoRA tasks). The final stage (agent/final.py) trains the best
    # configurations again by setting it and the seed; None: the task cannot train again (a table).
    fidelity_option: ClassVar[str | None] = None
    # What one evaluation needs on a Ray cluster (Ray actor options: num_cpus, num_gpus, memory,
    # resources). A training evaluator on a GPU declares {"num_cpus": 1, "num_gpus": 1}.
    resources: ClassVar[dict[str, Any]] = {"num_cpus": 1}

    @abstractmethod
    def evaluate(self, ncode: str) -> Outcome: ...

    def evaluate_reporting(self, ncode: str, reporter: Reporter) -> Outcome:
        """Evaluate while telling ``reporter`` each intermediate value; by default there are none."""
        return self.evaluate(ncode)

    def final_metrics(self, ncode: str) -> dict[str, Any]:
        return {}

    def metric_names(self) -> frozenset[str] | None:
        """Every metric a result of this task can give (its score, other metrics, final-report metrics, what it
        knows before), where the task knows them without evaluating (a table, a built-in training task); None
        where only a result tells (a command, an objective). A new run naming another is refused before it starts."""
        return None

    def known_before(self, ncode: str) -> dict[str, float]:
        """Metrics the code alone determines, known without evaluating it (a table's parameter count, a measured
        latency): a constraint on one of them rejects a candidate before any budget is spent on it."""
        return {}

    def broken_before(self, ncode: str) -> list[str]:
        """The constraints ``ncode`` is known to break before it is evaluated, each said with its value; only a
        run with constraints (evaluators.judged) has any."""
        return []

    def excess_before(self, ncode: str) -> float:
        """How far ``ncode`` is known to lie past the constraints before it is evaluated (0: none known broken)."""
        return 0.0

    @property
    def objectives(self) -> list[Objective]:
        """What a run scores: its metric, then, in a run of several objectives, the others (evaluators.judged)."""
        return [Objective(self.metric.name, self.metric.maximize)]

    def describe(self) -> str:
        """One line for the CLI: what this evaluator scores and how."""
        return f"{self.space.name}: {self.metric.name} ({'max' if self.metric.maximize else 'min'}imised)"


def scored_or_failed(outcome: Outcome) -> Outcome:
    """A successful outcome without a finite score becomes a failure: no ranker can learn from NaN or inf. One
    that reported ``feasible: false`` among its metrics is infeasible, its values kept."""
    if outcome.status == "ok" and (outcome.score is None or not math.isfinite(outcome.score)):
        return Outcome(None, outcome.metrics, status="failed", error=f"score is {outcome.score} (NaN, inf or missing)")
    if outcome.status == "ok" and outcome.metrics.get("feasible") is False:
        outcome.status, outcome.error = "infeasible", "the evaluation reported feasible: false"
    return outcome
