"""The driver's side of intermediate reports: record each in the run store, then ask the scheduler.

Every kind of evaluation ends up here: one in this process calls :meth:`ReportDesk.decide_for`'s
function directly, one on a worker sends its report over the worker's channel and the pool calls
:meth:`ReportDesk.__call__` (see agent/workers/parallel.py). The store is written before the
scheduler is asked, so a report is never lost to a crash that follows it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.loops.common import Progress
from agent.runs.store import RunStore
from agent.strategies.schedulers import Board, Scheduler
from tools.evaluator import Metric
from tools.reporting import Decide

UNJUDGED_AFTER = 3  # finished evaluations without a single report after which a scheduler is said to be idle
log = logging.getLogger(__name__)


class ReportDesk:
    """Records the reports of one run's evaluations and answers each: stop or go on."""

    def __init__(self, store: RunStore, run_id: str, metric: Metric, scheduler: Scheduler | None) -> None:
        self.store, self.run_id, self.metric, self.scheduler = store, run_id, metric, scheduler
        self.board = Board(finished=self._finished)  # the store's reports, then this session's as they come
        for _, ncode, step, value in store.reports(run_id):
            self.board.add(ncode, step, metric.utility(value))
        self._started: set[str] = set()  # codes that reported since this desk opened
        self._said_idle = False

    def __call__(self, ncode: str, step: float, value: float) -> bool:
        curve = self.board.curves.get(ncode, [])
        if ncode not in self._started or (curve and step <= curve[-1][0]):
            # An evaluation started again (the run resumed, its worker died): its old reports go.
            self.store.clear_reports(self.run_id, ncode)
            self.board.forget(ncode)
            self._started.add(ncode)
        self.store.add_report(self.run_id, ncode, step, value)
        self.board.add(ncode, step, self.metric.utility(value))
        if self.scheduler is None:
            return False
        return self.scheduler.should_stop(ncode, step, self.metric.utility(value), self.board)

    def watching(self, on_progress: Callable[[Progress], None] | None) -> Callable[[Progress], None]:
        """``on_progress``, after saying (once) that the scheduler has nothing to judge: a task that never
        reports would otherwise look scheduled while every evaluation runs to its end."""

        def progress(update: Progress) -> None:
            finished = update.evaluations - update.failed
            if self.scheduler and not self._said_idle and finished >= UNJUDGED_AFTER and not self.board.curves:
                self._said_idle = True
                log.warning(
                    "--scheduler %s has nothing to judge: %d evaluations finished without reporting an intermediate "
                    "value, so every evaluation runs to its end. A command prints lines such as 'epoch 3 val_acc: "
                    "0.71', an objective calls trial.report(value, epoch) (README: Stop poor trainings early)",
                    self.scheduler.name, finished,
                )  # fmt: skip
            if on_progress is not None:
                on_progress(update)

        return progress

    def decide_for(self, ncode: str) -> Decide:
        """The answerer of one evaluation run in this process."""
        return lambda step, value: self(ncode, step, value)

    def _finished(self) -> set[str]:
        query = "SELECT ncode FROM evaluations WHERE run_id = ? AND status = 'ok'"
        return {row[0] for row in self.store.db.execute(query, [self.run_id])}
