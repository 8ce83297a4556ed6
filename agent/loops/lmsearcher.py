"""The LM-Searcher loop as a LangGraph state machine::

    START -> encode -> rank -> evaluate -> record --(budget left)--> encode
                 |                            +--(budget spent)----> END
                 +--(space exhausted)--> END

Nodes are plain functions of the state and are idempotent: each reads the
history from the run store, and ``evaluate`` skips codes already recorded, so
re-running a node after a crash repeats no evaluation.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from langgraph.graph import END, START, StateGraph

from agent.loops.state import SearchState
from agent.runs.store import Observation, RunStore
from agent.strategies.proposers import ProposalContext, Proposer
from agent.strategies.rankers import Ranker, RankRequest
from tools.evaluator import Evaluator, Outcome
from tools.ncode import decode


@dataclass
class Progress:
    """What the record node reports after each step."""

    evaluations: int
    budget: int
    best_ncode: str | None
    best_score: float | None
    last: list[tuple[str, Outcome]]
    running: int = 0  # evaluations on a worker now (parallel searches)
    queued: int = 0  # evaluations waiting for a free worker
    failed: int = 0  # recorded evaluations whose status is not ok


@dataclass
class LoopParts:
    """Everything the nodes need besides the state; none of it is checkpointed."""

    store: RunStore
    evaluator: Evaluator
    evaluate: Callable[[str], Outcome]  # the evaluator tool
    proposer: Proposer
    ranker: Ranker
    budget: int
    batch: int = 1
    pool_size: int = 10
    seed: int = 0
    on_progress: Callable[[Progress], None] | None = None
    # Evaluate a step's k picks in parallel (agent.workers.parallel.EvaluationPool.evaluate_all): yields
    # (code, outcome) as each finishes. None: one after another through ``evaluate``.
    evaluate_many: Callable[[list[str]], Iterable[tuple[str, Outcome]]] | None = None

    def rng(self, iteration: int, purpose: str) -> random.Random:
        """A generator fixed by (seed, step, purpose): a re-run step draws the same numbers."""
        return random.Random(f"{self.seed}/{iteration}/{purpose}")


class HistoryView:
    """The run's evaluations, read incrementally from the store (which stays the source of truth)."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.rows: list[Observation] = []
        self.last_id = 0

    def __call__(self) -> list[Observation]:
        for row_id, observation in self.store.observations(self.run_id, self.last_id):
            self.rows.append(observation)
            self.last_id = row_id
        return self.rows


def record_step(
    store: RunStore,
    run_id: str,
    history: list[Observation],
    best: Observation | None,
    budget: int,
    chosen: list[str],
    on_progress: Callable[[Progress], None] | None,
) -> None:
    """The common end of a step, whatever the strategy: update the run's row and report progress."""
    store.prune_checkpoints(run_id)
    best_ncode, best_score = (best.ncode, best.score) if best else (None, None)
    store.update_run(run_id, n_evaluations=len(history), best_ncode=best_ncode, best_score=best_score)
    if on_progress:
        picked = set(chosen)
        last = [(o.ncode, Outcome(o.score, status=o.status, cost_s=o.cost_s)) for o in history if o.ncode in picked]
        failed = sum(o.status != "ok" for o in history)
        on_progress(Progress(len(history), budget, best_ncode, best_score, last, failed=failed))


def best_of(history: list[Observation], parts: LoopParts) -> Observation | None:
    ok = [o for o in history if o.score is not None]
    return max(ok, key=lambda o: parts.evaluator.metric.utility(o.score)) if ok else None


def build_graph(parts: LoopParts) -> StateGraph:
    space, metric = parts.evaluator.space, parts.evaluator.metric
    views: dict[str, HistoryView] = {}

    def observations(run_id: str) -> list[Observation]:
        if run_id not in views:
            views[run_id] = HistoryView(parts.store, run_id)
        return views[run_id]()

    def steps_left(history: list[Observation]) -> int:
        return min(parts.batch, parts.budget - len(history))

    def propose(history: list[Observation], rng: random.Random, n: int) -> list[str]:
        context = ProposalContext(space, metric, history, {o.ncode for o in history}, rng)
        return parts.proposer.propose(context, n)

    def encode(state: SearchState) -> dict:
        history = observations(state["run_id"])
        k = steps_left(history)
        pool = propose(history, parts.rng(state["iteration"], "encode"), max(parts.pool_size, k)) if k > 0 else []
        return {"pool": pool, "chosen": [], "done": not pool}

    def rank(state: SearchState) -> dict:
        history = observations(state["run_id"])
        iteration = state["iteration"]
        repools = itertools.count(1)
        request = RankRequest(
            space, metric, history, state["pool"], steps_left(history), parts.rng(iteration, "rank"),
            repool=lambda: propose(history, parts.rng(iteration, f"repool{next(repools)}"), len(state["pool"])),
        )  # fmt: skip
        decision = parts.ranker.rank(request)
        parts.store.record_decision(
            state["run_id"], iteration, parts.ranker.name, decision.pool or state["pool"], decision
        )
        return {"chosen": decision.chosen, "pool": decision.pool or state["pool"]}

    def evaluate(state: SearchState) -> dict:
        # Codes recorded before a crash are never evaluated twice.
        run_id = state["run_id"]
        todo = {code: p for p, code in enumerate(state["chosen"]) if not parts.store.has_evaluation(run_id, code)}
        if parts.evaluate_many is not None and len(todo) > 1:
            results = parts.evaluate_many(list(todo))
        else:
            results = ((code, parts.evaluate(code)) for code in todo)
        for code, outcome in results:
            parts.store.add_evaluation(run_id, state["iteration"], todo[code], code, decode(space, code), outcome)
        return {}

    def record(state: SearchState) -> dict:
        run_id = state["run_id"]
        history = observations(run_id)
        record_step(
            parts.store, run_id, history, best_of(history, parts), parts.budget, state["chosen"], parts.on_progress
        )
        return {"iteration": state["iteration"] + 1, "done": len(history) >= parts.budget}

    graph = StateGraph(SearchState)
    graph.add_node("encode", encode)
    graph.add_node("rank", rank)
    graph.add_node("evaluate", evaluate)
    graph.add_node("record", record)
    graph.add_edge(START, "encode")
    graph.add_conditional_edges("encode", lambda s: END if s["done"] else "rank", ["rank", END])
    graph.add_edge("rank", "evaluate")
    graph.add_edge("evaluate", "record")
    graph.add_conditional_edges("record", lambda s: END if s["done"] else "encode", ["encode", END])
    return graph
