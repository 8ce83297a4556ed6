"""What every evaluator is: a space, a metric, and a way to turn an NCode into a score."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tools.ncode import SearchSpace


class EvaluatorSetupError(ValueError):
    """A task that cannot start (missing file, bad path); raised before the search begins."""


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
    status: str = "ok"  # ok | failed | infeasible
    error: str | None = None


class Evaluator(ABC):
    """Turns NCodes of ``space`` into scores of ``metric``.

    ``evaluate`` may raise; the evaluator tool turns exceptions into failed outcomes.
    ``final_metrics`` gives what the searcher must not see while searching (for
    example NAS-Bench-201 test accuracy) for the final report.
    """

    space: SearchSpace
    metric: Metric
    # What one evaluation needs on a Ray cluster (Ray actor options: num_cpus, num_gpus, memory,
    # resources). A training evaluator on a GPU declares {"num_cpus": 1, "num_gpus": 1}.
    resources: ClassVar[dict[str, Any]] = {"num_cpus": 1}

    @abstractmethod
    def evaluate(self, ncode: str) -> Outcome: ...

    def final_metrics(self, ncode: str) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        """One line for the CLI: what this evaluator scores and how."""
        return f"{self.space.name}: {self.metric.name} ({'max' if self.metric.maximize else 'min'}imised)"


def scored_or_failed(outcome: Outcome) -> Outcome:
    """A successful outcome without a finite score becomes a failure: no ranker can learn from NaN or inf."""
    if outcome.status == "ok" and (outcome.score is None or not math.isfinite(outcome.score)):
        return Outcome(None, outcome.metrics, status="failed", error=f"score is {outcome.score} (NaN, inf or missing)")
    return outcome
