"""Start, resume and finish searches: configuration in, a finished run in the store out."""

from __future__ import annotations

import importlib.util
import json
import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import StateGraph

from agent.loops.lmsearcher import LoopParts, Progress, build_graph
from agent.runs.store import RunStore, StoreError, open_connection
from agent.strategies.proposers import PROPOSERS, Proposer
from agent.strategies.rankers import AdditiveRanker, FirstRanker, NearestRanker, RandomRanker, Ranker
from evaluators.registry import TaskOptions, make_evaluator
from tools.evaluator import Evaluator
from tools.evaluator_tool import make_evaluator_tool
from tools.ncode import SearchSpace

# Baselines whose proposer does the searching; the ranker just keeps its order.
PROPOSER_DRIVEN = {"evolution", "tpe"}
BASELINE_RANKERS = ("random", "additive", "nearest", *sorted(PROPOSER_DRIVEN))
STRATEGIES = ("lmsearcher", "collm")  # the LM-Searcher loop (loops/lmsearcher.py) or CoLLM-NAS (loops/collm.py)


class SearchError(RuntimeError):
    """A search that cannot start or go on; the message names the problem and the fix."""


@dataclass
class SearchConfig:
    """Everything that defines a run. Stored with the run, so it must never hold secrets:
    API keys are read from the environment by the rankers themselves."""

    task: str = "nas_bench_graph"
    dataset: str | None = None
    ranker: str = "local"  # LM-Searcher-tiny, shipped in models/, served offline
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
    strategy: str = "lmsearcher"
    collm_options: dict[str, Any] = field(default_factory=dict)  # agent.loops.collm.CollmOptions; LLM URLs as ranker's
    workers: int = 1  # evaluations at once (agent/workers/parallel.py)
    backend: str = "local"  # local: processes on this machine; ray: actors on a Ray cluster
    ray_address: str | None = None  # an existing cluster; None: a local Ray
    mode: str = "auto"  # sync, async (agent/loops/asynchronous.py), auto: async when workers > 1 and batch == 1
    eval_retries: int = 2  # retries of an evaluation whose worker died, before it is recorded as failed
    worker_resources: dict[str, Any] = field(default_factory=dict)  # Ray actor options; {}: the evaluator's own

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> SearchConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in stored.items() if key in known})

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise SearchError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")
        if self.budget <= 0:
            raise SearchError(f"--budget must be a positive number of evaluations, got {self.budget}")
        if self.batch <= 0:
            raise SearchError(f"--batch must be at least 1, got {self.batch}")
        if self.pool_size <= 0:
            raise SearchError(f"--pool-size must be at least 1, got {self.pool_size}")
        if self.ranker in PROPOSER_DRIVEN and self.proposer not in (None, self.ranker):
            raise SearchError(f"--ranker {self.ranker} is a proposer-driven baseline; drop --proposer {self.proposer}")
        if self.proposer is not None and self.proposer not in (*PROPOSERS, "generate"):
            raise SearchError(f"unknown proposer {self.proposer!r}; valid: {', '.join(PROPOSERS)}")
        self._check_parallel()

    def asynchronous(self) -> bool:
        """Whether the asynchronous graph (agent/loops/asynchronous.py) drives this run."""
        return self.mode == "async" or (self.mode == "auto" and self.workers > 1 and self.batch == 1)

    def _check_parallel(self) -> None:
        from agent.workers.parallel import BACKENDS

        if self.workers < 1:
            raise SearchError(f"--workers must be at least 1, got {self.workers}")
        if self.mode not in ("auto", "sync", "async"):
            raise SearchError(f"unknown mode {self.mode!r}; valid: auto, sync, async")
        if self.backend not in BACKENDS:
            raise SearchError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.eval_retries < 0:
            raise SearchError(f"--eval-retries must be 0 or more, got {self.eval_retries}")
        if self.mode == "async" and self.batch > 1:
            raise SearchError("--mode async decides one code at a time; drop --batch (or use --mode sync)")
        if self.strategy != "lmsearcher" and (self.workers > 1 or self.mode == "async"):
            raise SearchError(f"--workers and --mode async apply to --strategy lmsearcher, not {self.strategy}")
        if self.ray_address and self.backend != "ray":
            raise SearchError("--ray-address needs --backend ray")
        if self.backend == "ray" and importlib.util.find_spec("ray") is None:
            raise SearchError("--backend ray needs Ray: pip install '.[distributed]' (or pip install ray)")


def make_proposer(config: SearchConfig, ranker: Ranker) -> Proposer:
    name = config.ranker if config.ranker in PROPOSER_DRIVEN else config.proposer
    if name == "generate":
        from agent.llm.generator import LLMGenerationProposer
        from agent.llm.ranker import LLMRanker

        if not isinstance(ranker, LLMRanker):
            raise SearchError("--proposer generate needs an LLM ranker (llm, openai:MODEL or local:PATH)")
        return LLMGenerationProposer(ranker.client, ranker.options)
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


def make_ranker(config: SearchConfig, space: SearchSpace | None = None) -> Ranker:
    if config.ranker == "random":
        return RandomRanker()
    if config.ranker == "additive":
        return AdditiveRanker()
    if config.ranker == "nearest":
        return NearestRanker()
    if config.ranker in PROPOSER_DRIVEN:
        return FirstRanker()
    from agent.llm.ranker import LLM_RANKER_PREFIXES, make_llm_ranker

    if config.ranker == "llm" or config.ranker.startswith(LLM_RANKER_PREFIXES):
        generates = config.proposer == "generate"
        return make_llm_ranker(config.ranker, config.ranker_options, space, config.pool_size, generates)
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
    costs_s: list[float]  # seconds of each evaluation, in order


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
        ranker = make_strategy(config, evaluator.space)  # a ranker that cannot start fails here, before any run
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
        ranker = make_strategy(config, evaluator.space)
        self.store.update_run(run_id, status="running", error=None)
        return self._drive(run_id, config, evaluator, ranker, on_progress)

    @staticmethod
    def _task_options(config: SearchConfig) -> TaskOptions:
        return TaskOptions(dataset=config.dataset, seed=config.seed, **config.task_options)

    def _drive(
        self, run_id: str, config: SearchConfig, evaluator: Evaluator, ranker: Any, on_progress: Any
    ) -> RunResult:
        pool = None
        try:
            if config.strategy == "collm":
                graph, first_state = _collm_graph(run_id, config, evaluator, ranker, self.store, on_progress)
            else:
                pool = _evaluation_pool(config, evaluator)
                graph, first_state = _lmsearcher_graph(run_id, config, evaluator, ranker, self.store, on_progress, pool)
            graph = graph.compile(checkpointer=self.checkpointer)
            thread = {"configurable": {"thread_id": run_id}, "recursion_limit": 10 * config.budget + 100}
            snapshot = graph.get_state(thread)
            first_input = None if snapshot.values else first_state
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
            if pool is not None:
                pool.close()
        return self._finish(run_id, evaluator)

    def _finish(self, run_id: str, evaluator: Evaluator) -> RunResult:
        run = self.store.get_run(run_id)
        final = evaluator.final_metrics(run["best_ncode"]) if run["best_ncode"] else {}
        costs = [row["cost_s"] for row in self.store.evaluations(run_id)]
        self.store.update_run(run_id, status="finished", final_metrics=json.dumps(final))  # last: see cli.run_search
        return RunResult(
            run_id, "finished", run["n_evaluations"], run["best_ncode"], run["best_score"], final, evaluator, costs
        )


def make_strategy(config: SearchConfig, space: SearchSpace | None = None) -> Any:
    """The ranker of the LM-Searcher loop, or CoLLM-NAS's Navigator and Generator (checked before any run)."""
    if config.strategy == "collm":
        from agent.loops.collm import make_collm_agents

        return make_collm_agents(config.collm_options, config.ranker_options)
    return make_ranker(config, space)


def _evaluation_pool(config: SearchConfig, evaluator: Evaluator) -> Any:
    """Workers for parallel or asynchronous runs (agent/workers/parallel.py); None: evaluate in this process."""
    if config.workers == 1 and not config.asynchronous():
        return None
    from agent.workers.parallel import ParallelSetupError, WorkerSpec, make_pool

    spec = WorkerSpec(config.task, Search._task_options(config), config.simulated_cost_s)
    resources = config.worker_resources or dict(evaluator.resources)
    try:
        return make_pool(config.backend, config.workers, spec, config.eval_retries, config.ray_address, resources)
    except ParallelSetupError as error:
        raise SearchError(str(error)) from None


def _lmsearcher_graph(
    run_id: str, config: SearchConfig, evaluator: Evaluator, ranker: Ranker, store: RunStore, on_progress: Any,
    pool: Any = None,
) -> tuple[StateGraph, dict]:  # fmt: skip
    if config.asynchronous():
        from agent.loops.asynchronous import AsyncParts, build_async_graph, initial_state

        async_parts = AsyncParts(
            store=store,
            evaluator=evaluator,
            pool=pool,
            proposer=make_proposer(config, ranker),
            ranker=ranker,
            budget=config.budget,
            pool_size=1 if config.ranker in PROPOSER_DRIVEN else config.pool_size,
            seed=config.seed,
            on_progress=on_progress,
        )
        return build_async_graph(async_parts), dict(initial_state(run_id))
    parts = LoopParts(
        store=store,
        evaluator=evaluator,
        evaluate=_tool_caller(evaluator, config.simulated_cost_s),
        proposer=make_proposer(config, ranker),
        ranker=ranker,
        budget=config.budget,
        batch=config.batch,
        pool_size=1 if config.ranker in PROPOSER_DRIVEN else config.pool_size,
        seed=config.seed,
        on_progress=on_progress,
        evaluate_many=pool.evaluate_all if pool is not None else None,
    )
    return build_graph(parts), {"run_id": run_id, "iteration": 0, "pool": [], "chosen": [], "done": False}


def _collm_graph(
    run_id: str, config: SearchConfig, evaluator: Evaluator, agents: Any, store: RunStore, on_progress: Any
) -> tuple[StateGraph, dict]:
    from agent.loops.collm import CollmParts, build_collm_graph, initial_state

    parts = CollmParts(
        store=store,
        evaluator=evaluator,
        evaluate=_tool_caller(evaluator, config.simulated_cost_s),
        agents=agents,
        budget=config.budget,
        seed=config.seed,
        on_progress=on_progress,
    )
    return build_collm_graph(parts), dict(initial_state(run_id))


def _tool_caller(evaluator: Evaluator, simulated_cost_s: float):
    """The evaluator node calls the evaluator through its LangChain tool."""
    from tools.evaluator import Outcome

    tool = make_evaluator_tool(evaluator, simulated_cost_s)

    def call(ncode: str) -> Outcome:
        return Outcome(**tool.invoke({"ncode": ncode}))

    return call


__all__ = ["Progress", "RunResult", "Search", "SearchConfig", "SearchError"]
