"""The LM-Searcher loop as a LangGraph state machine::

    START -> encode -> rank -> evaluate -> record --(budget left)--> encode
                 |                            +--(budget spent)----> END
                 +--(space exhausted)--> END

Nodes are plain functions of the state and are idempotent: each reads the
history from the run store, and ``evaluate`` skips codes already recorded, so
re-running a node after a crash repeats no evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from langgraph.graph import END, START, StateGraph

from agent.loops.common import Histories, Limits, Progress, RankingScaffold, Reading, step_end_nodes
from agent.loops.state import SearchState
from agent.runs.store import Observation, RunStore
from agent.strategies.proposers import Proposer
from agent.strategies.rankers import Ranker
from tools.evaluator import Evaluator, Outcome


@dataclass
class LoopParts(RankingScaffold):
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
    target: float | None = None
    limits: Limits = field(default_factory=Limits)
    reading: Reading = field(default_factory=Reading)  # what searchers read of the history (common.Reading)
    known: list[Observation] = field(default_factory=list)  # --warm-start results (common.RankingScaffold)
    queue: list[str] = field(default_factory=list)  # codes to evaluate first
    dropped: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # common.RankingScaffold
    repaired: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # common.RankingScaffold


def build_graph(parts: LoopParts) -> StateGraph:
    observations = Histories(parts.store)

    def steps_left(history: list[Observation]) -> int:
        return min(parts.batch, parts.budget - len(history))

    def encode(state: SearchState) -> dict:
        history = observations(state["run_id"])
        k = steps_left(history)
        iteration = state["iteration"]
        rng = parts.rng(iteration, "encode")
        seen = {o.ncode for o in history}
        pool = parts.propose(history, seen, rng, max(parts.pool_size, k), iteration) if k > 0 else []
        return {"pool": pool, "chosen": [], "done": not pool}

    def rank(state: SearchState) -> dict:
        history = observations(state["run_id"])
        seen = {o.ncode for o in history}
        decision = parts.decide(state["run_id"], state["iteration"], history, seen, state["pool"], steps_left(history))
        return {"chosen": decision.chosen, "pool": decision.pool or state["pool"]}

    evaluate, record = step_end_nodes(parts, observations, parts.evaluate_many)

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
