"""Asynchronous search: keep every worker busy, decide again as soon as any evaluation ends::

    START -> dispatch --(something in flight)--> wait --(budget left or in flight)--> dispatch
                 |                                 +--(budget spent, nothing in flight)--> END
                 +--(nothing in flight, nothing left to propose)--> END

- **dispatch**: for each free worker slot (while evaluations + pending < budget) the
  proposer builds a pool excluding evaluated *and pending* codes, the ranker picks one
  (a decision row per pick, ``k = 1``), the code is marked pending in the run store and
  submitted to the :class:`agent.workers.parallel.EvaluationPool`.
- **wait**: blocks until any evaluation finishes, records it in the store and clears
  its pending mark.

How the ranker sees evaluations in flight: it does not. Pending codes are left out of
the pool (so nothing is evaluated twice) and out of the history (they have no score
yet); each decision uses every result finished by then. With N workers the search
therefore decides with up to N - 1 results missing; benchmarks/parallel_speedup.py
measures what that costs in search quality.

Pending evaluations live in the run store (table ``pending``), never only in memory:
a resumed driver re-submits those that were in flight when it stopped, so a run
finishes with exactly ``budget`` unique evaluations. Nodes are idempotent like the
synchronous loop's: each starts by reconciling the store with the pool (pending codes
already recorded are cleared, pending codes not running are submitted), and the step
index of a new decision comes from the store, so a node re-run after a crash repeats
no evaluation. Only this driver writes the store; workers return outcomes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from agent.loops.common import Histories, Limits, Progress, RankingScaffold, Reading, never_reported
from agent.runs.store import Observation, RunStore
from agent.strategies.proposers import Proposer
from agent.strategies.rankers import Ranker
from agent.workers.parallel import EvaluationPool
from tools.evaluator import Evaluator
from tools.ncode import decode


class AsyncSearchState(TypedDict):
    run_id: str
    iteration: int  # index of the next decision (one code per decision)
    in_flight: int  # evaluations pending when the node ended
    done: bool


def initial_state(run_id: str) -> AsyncSearchState:
    return {"run_id": run_id, "iteration": 0, "in_flight": 0, "done": False}


@dataclass
class AsyncParts(RankingScaffold):
    """Everything the nodes need besides the state; none of it is checkpointed."""

    store: RunStore
    evaluator: Evaluator
    pool: EvaluationPool
    proposer: Proposer
    ranker: Ranker
    budget: int
    pool_size: int = 10
    seed: int = 0
    on_progress: Callable[[Progress], None] | None = None
    target: float | None = None
    limits: Limits = field(default_factory=Limits)
    reading: Reading = field(default_factory=Reading)  # what searchers read of the history (common.Reading)
    known: list[Observation] = field(default_factory=list)  # --warm-start results (common.RankingScaffold)
    queue: list[str] = field(default_factory=list)  # codes to evaluate first
    dropped: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # common.RankingScaffold
    repaired: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # common.RankingScaffold


def build_async_graph(parts: AsyncParts) -> StateGraph:
    space, store, pool = parts.evaluator.space, parts.store, parts.pool
    observations = Histories(store)
    session = time.time()  # what never_reported counts from

    def reconcile(run_id: str) -> dict[str, int]:
        """Make the pool run exactly the store's pending codes that have no result yet."""
        pending = store.pending(run_id)
        running = pool.in_flight()
        for code in list(pending):
            if store.has_evaluation(run_id, code):  # recorded just before a crash
                store.clear_pending(run_id, code)
                del pending[code]
            elif code not in running:  # in flight when the driver stopped: submit again
                pool.submit(code)
        return pending

    def dispatch(state: AsyncSearchState) -> dict:
        run_id = state["run_id"]
        pending = reconcile(run_id)
        history = observations(run_id)
        iteration = max(state["iteration"], store.last_iteration(run_id) + 1)
        exhausted = False
        while pool.free() > 0 and len(history) + len(pending) < parts.budget and not parts.finished(history):
            code = parts.pick_pending(run_id, iteration, history, pending, parts.pool_size)
            if code is None:
                exhausted = True
                break
            pool.submit(code)  # after the store has it pending
            pending[code] = iteration
            iteration += 1
        done = not pending and (exhausted or parts.finished(history))
        return {"iteration": iteration, "in_flight": len(pending), "done": done}

    def wait(state: AsyncSearchState) -> dict:
        run_id = state["run_id"]
        pending = reconcile(run_id)
        finished = pool.wait() if pending else []
        for code, outcome in finished:
            if code in pending and not store.has_evaluation(run_id, code):
                store.add_evaluation(run_id, pending[code], 0, code, decode(space, code), outcome)
            store.clear_pending(run_id, code)
            pending.pop(code, None)
        history = observations(run_id)
        parts.record_step(run_id, history, finished, running=pool.running, queued=pool.queued)
        never_reported(store, run_id, history, session)
        return {"in_flight": len(pending), "done": not pending and parts.finished(history)}

    graph = StateGraph(AsyncSearchState)
    graph.add_node("dispatch", dispatch)
    graph.add_node("wait", wait)
    graph.add_edge(START, "dispatch")
    graph.add_conditional_edges("dispatch", lambda s: END if s["done"] or not s["in_flight"] else "wait", ["wait", END])
    graph.add_conditional_edges("wait", lambda s: END if s["done"] else "dispatch", ["dispatch", END])
    return graph
