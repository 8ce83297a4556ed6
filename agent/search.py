"""Start, resume and finish searches: configuration in, a finished run in the store out."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver

from agent.graph import LoopParts, Progress, build_graph
from agent.proposers import PROPOSERS, Proposer
from agent.rankers import FirstRanker, RandomRanker, Ranker
from agent.store import RunStore, StoreError, open_connection
from evaluators.base import Evaluator
from evaluators.registry import TaskOptions, make_evaluator
from tools.evaluator_tool import make_evaluator_tool

# Baselines whose proposer does the searching; the ranker just keeps its order.
PROPOSER_DRIVEN = {"evolution", "tpe"}
BASELINE_RANKERS = ("random", *sorted(PROPOSER_DRIVEN))


class SearchError(RuntimeError):
    """A search that cannot start or go on; the message names the problem and the fix."""


@dataclass
class SearchConfig:
    """Everything that defines a run. Stored with the run, so it must never hold secrets:
    API keys are read from the environment by the rankers themselves."""

    task: str = "nas_bench_graph"
    dataset: str | None = None
    ranker: str = "evolution"
    proposer: str | None = None  # default: random for --ranker random, mixed for LLM rankers
    budget: int = 100
    batch: int = 1
    pool_size: int = 10
    seed: int = 0
    random_fraction: float = 0.5
    population: int = 30
    sample_size: int = 10
    simulated_cost_s: float = 0.0
    task_options: dict[str, Any] = field(default_factory=dict)
    ranker_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> SearchConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in stored.items() if key in known})

    def check(self) -> None:
        if self.budget <= 0:
            raise SearchError(f"--budget must be a positive number of evaluations, got {self.budget}")
        if self.batch <= 0:
            raise SearchError(f"--batch must be at least 1, got {self.batch}")
        if self.pool_size <= 0:
            raise SearchError(f"--pool-size must be at least 1, got {self.pool_size}")
        if self.ranker in PROPOSER_DRIVEN and self.proposer not in (None, self.ranker):
            raise SearchError(f"--ranker {self.ranker} is a proposer-driven baseline; drop --proposer {self.proposer}")
        if self.proposer is not None and self.proposer not in PROPOSERS:
            raise SearchError(f"unknown proposer {self.proposer!r}; valid: {', '.join(PROPOSERS)}")


def make_proposer(config: SearchConfig) -> Proposer:
    name = config.ranker if config.ranker in PROPOSER_DRIVEN else config.proposer
    name = name or ("random" if config.ranker == "random" else "mixed")
    args = {
        "random_fraction": config.random_fraction,
        "population": config.population,
        "sample_size": config.sample_size,
    }
    try:
        return PROPOSERS[name](config.seed, args)
    except ValueError as error:
        raise SearchError(str(error)) from None


def make_ranker(config: SearchConfig) -> Ranker:
    if config.ranker == "random":
        return RandomRanker()
    if config.ranker in PROPOSER_DRIVEN:
        return FirstRanker()
    from agent.llm_ranker import LLM_RANKER_PREFIXES, make_llm_ranker

    if config.ranker == "llm" or config.ranker.startswith(LLM_RANKER_PREFIXES):
        return make_llm_ranker(config.ranker, config.ranker_options)
    raise SearchError(
        f"unknown ranker {config.ranker!r}; valid: {', '.join(BASELINE_RANKERS)}, llm, openai:MODEL, local:PATH"
    )


def new_run_id(config: SearchConfig) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{config.task}-{stamp}-{secrets.token_hex(2)}"


@dataclass
class RunResult:
    run_id: str
    status: str
    evaluations: int
    best_ncode: str | None
    best_score: float | None
    final_metrics: dict[str, Any]
    evaluator: Evaluator


class Search:
    """One open run database; start or resume runs in it."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        try:
            self.store = RunStore(open_connection(self.db_path))
            self._checkpoint_connection = open_connection(self.db_path)
        except StoreError as error:
            raise SearchError(str(error)) from None
        self.checkpointer = SqliteSaver(self._checkpoint_connection)

    def close(self) -> None:
        self._checkpoint_connection.close()
        self.store.db.conn.close()

    def start(self, config: SearchConfig, run_id: str | None = None, on_progress: Any = None) -> RunResult:
        config.check()
        run_id = run_id or new_run_id(config)
        if self.store.get_run(run_id) is not None:
            raise SearchError(f"run {run_id!r} already exists in {self.db_path}; resume it with --resume {run_id}")
        evaluator = make_evaluator(config.task, self._task_options(config))
        ranker = make_ranker(config)  # a ranker that cannot start fails here, before any run exists
        self.store.create_run(
            run_id, config.task, getattr(evaluator, "dataset", config.dataset or ""), evaluator.metric.name,
            evaluator.metric.maximize, config.budget, asdict(config),
        )  # fmt: skip
        return self._drive(run_id, config, evaluator, ranker, on_progress)

    def resume(self, run_id: str, on_progress: Any = None) -> RunResult:
        run = self.store.get_run(run_id)
        if run is None:
            known = ", ".join(r["run_id"] for r in self.store.list_runs()[-5:]) or "none"
            raise SearchError(f"no run {run_id!r} in {self.db_path} (latest runs: {known}); list them with 'runs'")
        if run["status"] == "finished":
            raise SearchError(f"run {run_id!r} already finished; start a new one (without --resume)")
        config = SearchConfig.from_stored(run["config"])
        evaluator = make_evaluator(config.task, self._task_options(config))
        ranker = make_ranker(config)
        self.store.update_run(run_id, status="running", error=None)
        return self._drive(run_id, config, evaluator, ranker, on_progress)

    @staticmethod
    def _task_options(config: SearchConfig) -> TaskOptions:
        return TaskOptions(dataset=config.dataset, seed=config.seed, **config.task_options)

    def _drive(
        self, run_id: str, config: SearchConfig, evaluator: Evaluator, ranker: Ranker, on_progress: Any
    ) -> RunResult:
        try:
            parts = LoopParts(
                store=self.store,
                evaluator=evaluator,
                evaluate=_tool_caller(evaluator, config.simulated_cost_s),
                proposer=make_proposer(config),
                ranker=ranker,
                budget=config.budget,
                batch=config.batch,
                pool_size=1 if config.ranker in PROPOSER_DRIVEN else config.pool_size,
                seed=config.seed,
                on_progress=on_progress,
            )
            graph = build_graph(parts).compile(checkpointer=self.checkpointer)
            thread = {"configurable": {"thread_id": run_id}, "recursion_limit": 10 * config.budget + 100}
            snapshot = graph.get_state(thread)
            first_input = (
                None if snapshot.values else {"run_id": run_id, "iteration": 0, "pool": [], "chosen": [], "done": False}
            )
            if first_input is not None or snapshot.next:
                graph.invoke(first_input, thread, durability="sync")
        except KeyboardInterrupt:
            self.store.update_run(run_id, status="interrupted", error="interrupted by the user; resume with --resume")
            raise
        except Exception as error:
            self.store.update_run(run_id, status="stopped", error=f"{type(error).__name__}: {error}")
            raise
        finally:
            ranker.close()
        return self._finish(run_id, evaluator)

    def _finish(self, run_id: str, evaluator: Evaluator) -> RunResult:
        run = self.store.get_run(run_id)
        final = evaluator.final_metrics(run["best_ncode"]) if run["best_ncode"] else {}
        self.store.update_run(run_id, status="finished", final_metrics=json.dumps(final))
        return RunResult(
            run_id, "finished", run["n_evaluations"], run["best_ncode"], run["best_score"], final, evaluator
        )


def _tool_caller(evaluator: Evaluator, simulated_cost_s: float):
    """The evaluator node calls the evaluator through its LangChain tool."""
    from evaluators.base import Outcome

    tool = make_evaluator_tool(evaluator, simulated_cost_s)

    def call(ncode: str) -> Outcome:
        return Outcome(**tool.invoke({"ncode": ncode}))

    return call


__all__ = ["Progress", "RunResult", "Search", "SearchConfig", "SearchError"]
