"""Intermediate results: what an evaluation tells the search while it trains, and the answer it gets.

An evaluation reports ``(value, step)`` pairs as it goes (a validation score after each epoch).
Each report is handed to ``decide``, the search's side of the conversation, which records it and
asks the run's scheduler whether this evaluation should go on; the evaluation asks
:meth:`Reporter.should_stop` and ends early when told to. Where the evaluation runs (this process,
a worker process, a forked child) only changes what ``decide`` is: a direct call or a round trip
over a pipe.

A stopped evaluation is recorded with status ``stopped``, its last reported value as its score
and its last step as its fidelity: never as a finished one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import Any

Decide = Callable[[float, float], bool]  # (step, value) -> stop?


class Stopped(Exception):
    """Raised by an objective that ends because :meth:`Reporter.should_stop` said so (optional: returning works too)."""


class Reporter:
    """The handle an evaluation reports through: ``report(value, step)``, then ``should_stop()``.

    Without ``decide`` (no scheduler) reports are only kept, and ``should_stop`` is always False.
    """

    def __init__(self, decide: Decide | None = None) -> None:
        self._decide = decide
        self.last: tuple[float, float] | None = None  # (step, value) of the latest report
        self.stopped = False

    def report(self, value: Any, step: Any) -> bool:
        """Tell the search ``value`` at ``step`` (an epoch, a number of batches); returns :meth:`should_stop`.
        Steps must grow; a NaN or infinite value is kept as the last one but is never compared."""
        if isinstance(value, bool) or not isinstance(value, Real):
            raise ValueError(f"report(value, step) takes a number as value, got {value!r}")
        if isinstance(step, bool) or not isinstance(step, Real) or not math.isfinite(step) or step < 0:
            raise ValueError(f"report(value, step) takes a step (epoch, batch) >= 0 as step, got {step!r}")
        if self.last is not None and step <= self.last[0]:
            raise ValueError(f"report steps must grow: step {step} came after step {self.last[0]}")
        self.last = (float(step), float(value))
        if self._decide is not None and not self.stopped and math.isfinite(value):
            self.stopped = bool(self._decide(float(step), float(value)))
        return self.stopped

    def should_stop(self) -> bool:
        """Whether the search's scheduler wants this evaluation ended now (it keeps its last report)."""
        return self.stopped


def asking_over(connection: Any) -> Decide:
    """The answerer of a process whose evaluation runs away from the search (a worker, a forked objective): each
    report is a round trip over ``connection``, answered by the other end (stop or go on)."""

    def decide(step: float, value: float) -> bool:
        connection.send(("report", (step, value)))
        return bool(connection.recv())

    return decide
