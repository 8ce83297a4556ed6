"""Any task with several objectives or constraints: its evaluator, and a judge of each result.

The task's own evaluator scores the configuration as always; this wrapper then collects the other
objectives and the constrained values from what it reported (its metrics, or for a table task the
columns it otherwise keeps for the final report, such as a parameter count), records them as the
outcome's ``values``, and marks a result that breaks a constraint ``infeasible``. Built by
:func:`evaluators.registry.make_evaluator` for every run that names objectives or constraints, in
the search process and in every worker alike.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from tools.evaluator import Evaluator, Outcome, unreported
from tools.ncode import decode
from tools.objectives import Constraint, Objective, broken, broken_where_known, excess_where_known, number_of
from tools.reporting import Reporter

log = logging.getLogger(__name__)
KNOWN_KEPT = 100_000  # codes whose known-before values are kept; past it, the older half is dropped (and recomputed)


class JudgedEvaluator(Evaluator):
    def __init__(
        self, inner: Evaluator, objectives: list[Objective], constraints: list[Constraint],
        known_functions: dict[str, Callable[[dict[str, Any]], Any]] | None = None, reject_early: bool = True,
    ) -> None:  # fmt: skip
        self.inner, self.constraints = inner, constraints
        self.known_functions = known_functions or {}  # reference -> function of the configuration (--known-before)
        self._failed_functions: set[str] = set()
        self._known: dict[str, dict[str, float]] = {}  # known_before per code: a pool asks again at every step
        self.reject_early = reject_early  # False: candidates known to break a constraint are evaluated all the same
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

    def metric_names(self) -> frozenset[str] | None:
        """The task's, unless a --known-before function may add any name."""
        return None if self.known_functions else self.inner.metric_names()

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
        if lacking:  # a table keeps such columns for the final report; others are known before: shown too
            hidden = {**self.inner.final_metrics(ncode), **self.known_before(ncode)}
            found = {name: number_of(hidden, name) for name in lacking if number_of(hidden, name) is not None}
            outcome.metrics = {**outcome.metrics, **found}
            values.update(found)
        missing = [o.name for o in self._objectives if number_of(values, o.name) is None]
        if missing:
            return Outcome(
                None, outcome.metrics, outcome.cost_s, "failed",
                unreported(missing[0], f"report {' and '.join(missing)} as a metric (a key of the dict an objective "
                           f"returns, a key of a JSON line, or a line '{missing[0]}: NUMBER')"),
            )  # fmt: skip
        outcome.values = tuple(number_of(values, o.name) for o in self._objectives)  # type: ignore[misc]
        problems = broken(self.constraints, values)
        if problems:
            outcome.status, outcome.error = "infeasible", "; ".join(problems)
        return outcome

    def final_metrics(self, ncode: str) -> dict[str, Any]:
        return self.inner.final_metrics(ncode)

    def known_before(self, ncode: str) -> dict[str, float]:
        """What the task knows of ``ncode`` unevaluated, and what each ``--known-before`` function computes from its
        configuration (a function of the configuration alone, so each code's values are computed once). A function
        that raises tells nothing for that code (logged once per function)."""
        if ncode not in self._known:
            if len(self._known) >= KNOWN_KEPT:  # a long run's pools and repairs ask about ever more codes
                for older in list(itertools.islice(self._known, KNOWN_KEPT // 2)):
                    del self._known[older]
            self._known[ncode] = self._compute_known(ncode)
        return dict(self._known[ncode])

    def _compute_known(self, ncode: str) -> dict[str, float]:
        known = dict(self.inner.known_before(ncode))
        for reference, function in self.known_functions.items():
            try:
                computed = function(decode(self.space, ncode))
                if not isinstance(computed, Mapping):
                    raise TypeError(f"it returned {computed!r}; return a dict such as {{'params': 12345}}")
            except Exception as error:  # users' code must not stop a search at proposal time
                if reference not in self._failed_functions:
                    self._failed_functions.add(reference)
                    log.warning("--known-before %s failed on %s (%s); its constraints wait for results", reference,
                                ncode, error)  # fmt: skip
                continue
            numbers = {str(name): number_of(computed, name) for name in computed}
            known.update({name: value for name, value in numbers.items() if value is not None})
        return known

    def broken_before(self, ncode: str) -> list[str]:
        """Only the constraints on what the task knows before evaluating: the others wait for the result."""
        if not self.reject_early:
            return []
        known = self.known_before(ncode)
        return broken_where_known(self.constraints, known)

    def excess_before(self, ncode: str) -> float:
        if not self.reject_early:
            return 0.0
        return excess_where_known(self.constraints, self.known_before(ncode))

    def describe(self) -> str:
        also = ", ".join(o.spec() for o in self._objectives[1:])
        limits = ", ".join(c.spec() for c in self.constraints)
        known = ", ".join(self.known_functions)
        return (
            self.inner.describe() + (f"; also {also}" if also else "") + (f"; subject to {limits}" if limits else "")
            + (f"; known before evaluating: {known}" if known else "")
        )  # fmt: skip
