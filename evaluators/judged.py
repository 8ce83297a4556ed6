"""Any task with several objectives or constraints: its evaluator, and a judge of each result.

The task's own evaluator scores the configuration as always; this wrapper then collects the other
objectives and the constrained values from what it reported (its metrics, or for a table task the
columns it otherwise keeps for the final report, such as a parameter count), records them as the
outcome's ``values``, and marks a result that breaks a constraint ``infeasible``. Built by
:func:`evaluators.registry.make_evaluator` for every run that names objectives or constraints, in
the search process and in every worker alike.
"""

from __future__ import annotations

from typing import Any

from tools.evaluator import Evaluator, Outcome
from tools.objectives import Constraint, Objective, broken, number_of
from tools.reporting import Reporter


class JudgedEvaluator(Evaluator):
    def __init__(self, inner: Evaluator, objectives: list[Objective], constraints: list[Constraint]) -> None:
        self.inner, self.constraints = inner, constraints
        self.space, self.metric = inner.space, inner.metric
        self.max_fidelity, self.resources, self.fidelity_option = (
            inner.max_fidelity, inner.resources, inner.fidelity_option,
        )  # fmt: skip
        self._objectives = [Objective(inner.metric.name, inner.metric.maximize), *objectives]

    @property
    def objectives(self) -> list[Objective]:
        return self._objectives

    def __getattr__(self, name: str) -> Any:
        """What else the task's evaluator has (a dataset name, a table's rows) reads through."""
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def evaluate(self, ncode: str) -> Outcome:
        return self.evaluate_reporting(ncode, Reporter())

    def evaluate_reporting(self, ncode: str, reporter: Reporter) -> Outcome:
        return self.judge(ncode, self.inner.evaluate_reporting(ncode, reporter))

    def judge(self, ncode: str, outcome: Outcome) -> Outcome:
        """The outcome with its objective values, infeasible when it breaks a constraint; a result without a value
        an objective needs is a failure naming it."""
        if outcome.status not in ("ok", "infeasible") or outcome.score is None:
            return outcome
        values = {**outcome.metrics, self.metric.name: outcome.score}
        needed = {o.name for o in self._objectives} | {c.name for c in self.constraints}
        lacking = [name for name in needed if number_of(values, name) is None]
        if lacking:  # a table keeps such columns for the final report: known without training, so shown
            hidden = self.inner.final_metrics(ncode)
            found = {name: number_of(hidden, name) for name in lacking if number_of(hidden, name) is not None}
            outcome.metrics = {**outcome.metrics, **found}
            values.update(found)
        missing = [o.name for o in self._objectives if number_of(values, o.name) is None]
        if missing:
            return Outcome(
                None, outcome.metrics, outcome.cost_s, "failed",
                f"objective {', '.join(missing)} missing from the result: report it as a metric (a key of the dict "
                f"an objective returns, a key of a JSON line, or a line '{missing[0]}: NUMBER')",
            )  # fmt: skip
        outcome.values = tuple(number_of(values, o.name) for o in self._objectives)  # type: ignore[misc]
        problems = broken(self.constraints, values)
        if problems:
            outcome.status, outcome.error = "infeasible", "; ".join(problems)
        return outcome

    def final_metrics(self, ncode: str) -> dict[str, Any]:
        return self.inner.final_metrics(ncode)

    def describe(self) -> str:
        also = ", ".join(o.spec() for o in self._objectives[1:])
        limits = ", ".join(c.spec() for c in self.constraints)
        return self.inner.describe() + (f"; also {also}" if also else "") + (f"; subject to {limits}" if limits else "")
