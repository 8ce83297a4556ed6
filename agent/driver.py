"""Start, resume and finish searches: configuration in, a finished run in the store out."""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import StateGraph

from agent.config import BASELINE_RANKERS, PROPOSER_DRIVEN, SearchConfig, is_llm_ranker
from agent.final import FinalScore, plan_of, run_final
from agent.loops.common import Limits, Progress, Reading, best_of, target_reached
from agent.loops.lmsearcher import LoopParts, build_graph
from agent.loops.reports import ReportDesk
from agent.runs.store import RunStore, StoreError, open_connection, open_store, pareto_front
from agent.runs.warm_start import WarmStartError, task_identity, warm_start_rows
from agent.strategies.proposers import PROPOSERS, Proposer
from agent.strategies.rankers import (
    AdditiveRanker,
    FirstRanker,
    NearestRanker,
    RandomRanker,
    RandomStart,
    Ranker,
)
from agent.strategies.schedulers import make_scheduler
from agent.strategies.user_rankers import RankerNotFound, UserRanker, is_user_ranker, load_user_ranker, object_spec
from evaluators.judged import JudgedEvaluator
from evaluators.registry import TaskOptions, make_evaluator
from tools.evaluator import Evaluator, Outcome
from tools.evaluator_tool import make_evaluator_tool
from tools.ncode import SearchSpace
from tools.objectives import parse_constraint, parse_objective

Objective = Callable[[dict[str, Any]], Any] | None  # a Python objective given as a function


def task_options(config: SearchConfig, objective: Objective = None) -> TaskOptions:
    """The evaluator's options; a function objective travels in memory (it is not stored with the run)."""
    options = config.task_options()
    if objective is not None:
        options.objective = objective
    return options


class SearchError(RuntimeError):
    """A search that cannot start or go on; the message names the problem and the fix."""


def metric_problem(config: SearchConfig, evaluator: Evaluator) -> str | None:
    """Why a new run's metrics are not what its task reports, before any evaluation is spent on them: a first
    ``--metric`` or direction the task does not score (it would be ignored), or an objective or constraint on a
    metric that a task knowing its metrics never gives (every evaluation would fail)."""
    metric, task = evaluator.metric, f"--task {config.task}"
    if config.metric is not None and config.metric != metric.name:
        return (f"--metric {config.metric}: {task} scores {metric.name}; give --metric {metric.name} first (or leave "
                "it out), then each further objective as --metric NAME:min or NAME:max")  # fmt: skip
    if config.minimize and metric.maximize:
        return f"--minimize: {task} maximizes {metric.name}; drop --minimize (or :min)"
    names = evaluator.metric_names()
    if names is None:
        return None
    wanted = [(f"--metric {spec}", parse_objective(spec).name) for spec in config.objectives]
    wanted += [(f"--constraint {spec}", parse_constraint(spec).name) for spec in config.constraint]
    for given, name in wanted:
        if name not in names:
            return f"{given}: {task} reports no {name!r}; its metrics are {', '.join(sorted(names))}"
    return None


def make_proposer(config: SearchConfig, ranker: Ranker) -> Proposer:
    name = config.proposer_name()
    if name == "generate":
        from agent.llm.generator import LLMGenerationProposer
        from agent.llm.ranker import LLMRanker

        if not isinstance(ranker, LLMRanker):
            raise SearchError("--proposer generate needs an LLM ranker (llm, openai:MODEL or local:PATH)")
        return LLMGenerationProposer(ranker.client, ranker.options)
    try:
        return PROPOSERS[name](config)
    except ValueError as error:
        raise SearchError(str(error)) from None


def make_ranker(config: SearchConfig, space: SearchSpace | None = None) -> Ranker:
    if config.ranker == "random":
        return RandomRanker()
    if config.ranker == "additive":
        return AdditiveRanker()
    if config.ranker in ("nearest", "nearest-mean"):
        return NearestRanker(config.history_cap, rounded=config.ranker == "nearest")
    if config.ranker in PROPOSER_DRIVEN:
        return FirstRanker(config.ranker)
    from agent.llm.ranker import make_llm_ranker

    if is_llm_ranker(config.ranker):
        generates = config.proposer == "generate"
        return make_llm_ranker(config.ranker, config.llm_options(), space, config.pool_size, generates)
    valid = (
        f"valid: {', '.join(BASELINE_RANKERS)}, llm, openai:MODEL, inprocess[:PATH], local[:PATH], vllm[:PATH], "
        "or your own as module:name"
    )
    if is_user_ranker(config.ranker):
        try:
            return load_user_ranker(config.ranker)
        except RankerNotFound as error:
            raise SearchError(f"unknown ranker {config.ranker!r} ({valid}); as your own ranker: {error}") from None
        except ValueError as error:
            raise SearchError(str(error)) from None
    raise SearchError(f"unknown ranker {config.ranker!r}; {valid}")


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
    statuses: dict[str, int]  # how many evaluations ended each way (ok, stopped, failed, infeasible)
    fidelity_spent: float  # steps (epochs) of all evaluations, summed
    wall_s: float  # wall seconds of every session of the run
    finals: list[FinalScore]  # the final stage's results, best mean first; [] without one
    final_fidelity: float | None  # the final stage's length (None: the search's own)
    front_size: int  # a run of several objectives: configurations on its Pareto front
    ended_early: str | None  # why the run holds fewer evaluations than its budget; None when it spent it


class Search:
    """One open run database; start or resume runs in it."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        try:
            self.store = open_store(self.db_path)
            self._checkpoint_connection = open_connection(self.db_path, verify=False)  # just verified
        except StoreError as error:
            raise SearchError(str(error)) from None
        self.checkpointer = SqliteSaver(self._checkpoint_connection)

    def close(self) -> None:
        self._checkpoint_connection.close()
        self.store.db.conn.close()

    def create(self, config: SearchConfig, evaluator: Evaluator, run_id: str | None = None) -> str:
        """Record a new run of ``config`` (status ``created``) without searching yet; returns its id. An option
        the run would not read is refused here, not in ``check``: runs stored before that rule still resume."""
        config.check_new()
        problem = metric_problem(config, evaluator)
        if problem:
            raise SearchError(problem)
        if config.mlflow is not None:  # MLflow that cannot be used fails now, before the run exists
            from agent.runs.mlflow_tracking import connect, tracking_uri

            config = config.changed(mlflow=tracking_uri(config.mlflow))
            connect(config.mlflow)
        if run_id is None:
            run_id = new_run_id(config)
            while self.store.get_run(run_id) is not None:  # runs started in the same second drew the same suffix
                run_id = new_run_id(config)
        elif self.store.get_run(run_id) is not None:
            raise SearchError(f"run {run_id!r} already exists in {self.db_path}; resume it with --resume {run_id}")
        dataset = getattr(evaluator, "dataset", config.dataset or "")
        warm = self._warm_start_rows(config, evaluator, dataset)  # every source read and checked before the run exists
        self.store.create_run(
            run_id, config.task, dataset, evaluator.metric.name, evaluator.metric.maximize, config.budget,
            config.stored(),
        )  # fmt: skip
        if warm:
            self.store.add_warm_starts(run_id, warm)
        return run_id

    def _warm_start_rows(self, config: SearchConfig, evaluator: Evaluator, dataset: str) -> list[dict[str, Any]]:
        if not config.warm_start and not config.transfer:
            return []
        judge = evaluator.judge if isinstance(evaluator, JudgedEvaluator) else _as_is
        identity = task_identity(config, dataset, evaluator.metric.name)
        try:
            return warm_start_rows(
                config.warm_start, config.transfer, config.transfer_top, identity, evaluator.space, evaluator.metric,
                judge, self.store.db.conn, self.db_path,
            )  # fmt: skip
        except WarmStartError as error:
            raise SearchError(str(error)) from None

    def start(
        self, config: SearchConfig, run_id: str | None = None, on_progress: Any = None, objective: Objective = None,
        ranker: Ranker | None = None,
    ) -> RunResult:  # fmt: skip
        """Create a run and search until its budget is spent. ``objective`` is the Python function of
        ``--task objective`` when it is given as a function rather than ``module:function``; ``ranker`` a
        ranker object of the user's, when ``config.ranker`` is its ``object_spec``."""
        config.check_new()
        preflight(config)
        evaluator = make_evaluator(config.task, task_options(config, objective))
        ranker = make_strategy(config, evaluator.space, ranker)  # a ranker that cannot start fails here, before any run
        try:
            run_id = self.create(config, evaluator, run_id)
        except BaseException:
            ranker.close()
            raise
        return self._drive(run_id, config, evaluator, ranker, on_progress, objective)

    def stored_config(self, run_id: str) -> SearchConfig:
        run = self.store.get_run(run_id)
        if run is None:
            known = ", ".join(r["run_id"] for r in self.store.list_runs()[-5:]) or "none"
            raise SearchError(f"no run {run_id!r} in {self.db_path} (latest runs: {known}); list them with 'runs'")
        return SearchConfig.from_stored(run["config"])

    def resume(
        self, run_id: str, on_progress: Any = None, objective: Objective = None, ranker: Ranker | None = None,
        **overrides: Any,
    ) -> RunResult:  # fmt: skip
        """Continue an unfinished run; ``overrides`` (a larger ``budget``, say) change its stored config."""
        config = self.stored_config(run_id)
        run = self.store.get_run(run_id)
        budget = overrides.get("budget")
        if budget is not None and budget < run["n_evaluations"]:
            raise SearchError(
                f"--budget {budget} is below the {run['n_evaluations']} evaluations run {run_id!r} already holds; "
                f"give a budget of at least {run['n_evaluations'] + 1} to continue it"
            )
        if run["status"] == "finished" and (budget is None or budget <= run["n_evaluations"]):
            raise SearchError(f"run {run_id!r} already finished; start a new one (without --resume)")
        preflight(config)  # before anything stored changes
        if overrides.get("mlflow") is not None:
            from agent.runs.mlflow_tracking import tracking_uri

            overrides["mlflow"] = tracking_uri(overrides["mlflow"])
        if overrides:
            config = config.changed(**overrides)
            config.check()
        evaluator = make_evaluator(config.task, task_options(config, objective))
        ranker = make_strategy(config, evaluator.space, ranker)
        if overrides:  # stored once the run can go on: a refused resume changes nothing
            self.store.update_run(run_id, budget=config.budget, config=json.dumps(config.stored()))
        return self._drive(run_id, config, evaluator, ranker, on_progress, objective)

    def _drive(
        self, run_id: str, config: SearchConfig, evaluator: Evaluator, ranker: Any, on_progress: Any,
        objective: Objective,
    ) -> RunResult:  # fmt: skip
        from agent.runs.mlflow_tracking import track

        pool = None
        try:
            tracking = track(config.mlflow, self.store, run_id)  # a no-op without --mlflow; syncs after each step
        except BaseException:
            ranker.close()
            raise
        self.store.update_run(run_id, status="running", error=None)
        desk = make_desk(config, evaluator, self.store, run_id)
        limits = make_limits(config, evaluator, self.store.get_run(run_id))
        run = Running(run_id, self.store, desk.watching(tracking.watching(on_progress)), desk, limits)
        try:
            if config.strategy == "collm":
                graph, first_state = _collm_graph(run, config, evaluator, ranker)
            else:
                pool = _evaluation_pool(config, evaluator, objective, run.desk)
                graph, first_state = _lmsearcher_graph(run, config, evaluator, ranker, pool)
            graph = graph.compile(checkpointer=self.checkpointer)
            thread = {"configurable": {"thread_id": run_id}, "recursion_limit": 10 * config.budget + 100}
            graph_input = _graph_input(graph.get_state(thread), first_state, self.store.get_run(run_id), config)
            if graph_input is not FINISHED:
                graph.invoke(graph_input, thread, durability="sync")
            plan = plan_of(config)
            if plan is not None:  # resumable: it trains only what an earlier session did not
                self.store.update_run(run_id, status="final stage")
                run.finals = run_final(self.store, run_id, config, plan, objective)
        except KeyboardInterrupt:
            self.store.update_run(run_id, status="interrupted", error="interrupted by the user; resume with --resume")
            raise
        except Exception as error:
            self.store.update_run(run_id, status="stopped", error=f"{type(error).__name__}: {error}")
            raise
        finally:
            self.store.update_run(run_id, wall_s=run.limits.wall_spent())
            ranker.close()
            if pool is not None:
                pool.close()
            tracking.close()
        return self._finish(run_id, evaluator, run.limits, run.finals)

    def _finish(self, run_id: str, evaluator: Evaluator, limits: Limits, finals: list[FinalScore]) -> RunResult:
        run = self.store.get_run(run_id)
        final = evaluator.final_metrics(run["best_ncode"]) if run["best_ncode"] else {}
        history = [observation for _, observation in self.store.observations(run_id)]
        statuses = dict(Counter(o.status for o in history))
        config = SearchConfig.from_stored(run["config"])
        self.store.update_run(run_id, status="finished", final_metrics=json.dumps(final))  # last: see cli.run_search
        return RunResult(
            run_id, "finished", run["n_evaluations"], run["best_ncode"], run["best_score"], final, evaluator,
            [o.cost_s for o in history], statuses, limits.fidelity_spent(history), run["wall_s"] or 0.0, finals,
            config.final_fidelity, len(pareto_front(history, evaluator.objectives)),
            ended_early(config, evaluator, history, limits),
        )  # fmt: skip


def ended_early(config: SearchConfig, evaluator: Evaluator, history: list[Any], limits: Limits) -> str | None:
    """Why a finished run holds fewer evaluations than its budget, in words; None when it spent its budget."""
    if len(history) >= config.budget:
        return None
    if limits.spent(history):
        return "the --fidelity-budget or --time-budget was spent"
    if target_reached(best_of(history, evaluator.metric), evaluator.metric, config.target):
        return f"the best score reached --target {config.target:g}"
    if config.strategy == "lmsearcher":
        return f"no configuration was left to propose: space {evaluator.space.name!r} ran out after {len(history)}"
    return None


def make_strategy(config: SearchConfig, space: SearchSpace | None = None, ranker: Ranker | None = None) -> Any:
    """The ranker of the LM-Searcher loop, or CoLLM-NAS's Navigator and Generator (checked before any run).
    ``ranker`` is a user's ranker object, which a run's config names as ``object:Class``."""
    if ranker is not None:
        if config.strategy == "collm" or config.ranker != object_spec(ranker):
            raise SearchError(
                f"a ranker object ({type(ranker).__name__}) drives only a run whose ranker it is; this run's is "
                f"{config.ranker!r} with --strategy {config.strategy}"
            )
        try:
            ranker = UserRanker(ranker, type(ranker).__name__, owned=False)
        except ValueError as error:
            raise SearchError(str(error)) from None
    elif config.strategy == "collm":
        from agent.loops.collm import make_collm_agents

        return make_collm_agents(config.collm_options(), config.llm_options())
    else:
        ranker = make_ranker(config, space)
    return RandomStart(ranker, config.random_start) if config.random_start else ranker


FINISHED = object()  # _graph_input: the graph has ended and has nothing to do


def _graph_input(snapshot: Any, first_state: dict[str, Any], run: dict[str, Any], config: SearchConfig) -> Any:
    """What to invoke a run's graph with: its first state (a new run); None to go on from its checkpoint; its
    last state, not done, when the graph ended and the budget was raised since; FINISHED when it ended.

    A graph stopped between a node saving its result and the next checkpoint has no ``next`` node (LangGraph
    leaves out tasks whose writes are saved) but still a task: it goes on from there. Taking it for an ended
    graph restarted the step, which then picked and evaluated a second code, and the run diverged."""
    if not snapshot.values:
        return first_state
    if snapshot.next or snapshot.tasks:
        return None
    if run["n_evaluations"] < config.budget:
        return {**snapshot.values, "done": False}
    return FINISHED


def preflight(config: SearchConfig) -> None:
    """Check in seconds what can be checked before the task is built (minutes for a training task) and a run is
    made: what an LLM ranker or CoLLM-NAS needs (API keys, endpoints answering, the shipped model; checked again
    by :func:`make_strategy`) and a Ray cluster's address answering."""
    if config.backend == "ray":
        from agent.workers.parallel import ParallelSetupError, check_ray_address

        try:
            check_ray_address(config.ray_address)
        except ParallelSetupError as error:
            raise SearchError(str(error)) from None
    if config.strategy == "collm":
        from agent.loops.collm import make_collm_agents

        make_collm_agents(config.collm_options(), config.llm_options())
    elif is_llm_ranker(config.ranker):
        from agent.llm.ranker import preflight_llm_ranker

        preflight_llm_ranker(config.ranker, config.llm_options())


@dataclass
class Running:
    """What every loop of one run session shares besides the config: the run, its store, where progress
    goes, who answers intermediate reports, and the budgets in steps and seconds."""

    run_id: str
    store: RunStore
    on_progress: Any
    desk: ReportDesk
    limits: Limits
    finals: list[FinalScore] = field(default_factory=list)


def make_desk(config: SearchConfig, evaluator: Evaluator, store: RunStore, run_id: str) -> ReportDesk:
    """The run's report desk and scheduler (a scheduler the task cannot serve fails here, before searching)."""
    try:
        scheduler = make_scheduler(
            config.scheduler, config.min_fidelity, config.max_fidelity or evaluator.max_fidelity,
            config.reduction_factor, config.seed,
        )  # fmt: skip
    except ValueError as error:
        raise SearchError(str(error)) from None
    return ReportDesk(store, run_id, evaluator.metric, scheduler)


def make_limits(config: SearchConfig, evaluator: Evaluator, run: dict[str, Any]) -> Limits:
    max_fidelity = config.max_fidelity or evaluator.max_fidelity
    return Limits(config.fidelity_budget, config.time_budget, max_fidelity, run.get("wall_s") or 0.0)


def _evaluation_pool(config: SearchConfig, evaluator: Evaluator, objective: Objective, desk: ReportDesk) -> Any:
    """Workers for parallel or asynchronous runs (agent/workers/parallel.py); None: evaluate in this process."""
    if config.workers == 1 and not config.asynchronous():
        return None
    from agent.workers.parallel import ParallelSetupError, WorkerSpec, make_pool

    spec = WorkerSpec(config.task, task_options(config, objective), config.simulated_cost_s)
    resources = config.worker_resources() or dict(evaluator.resources)
    try:
        pool = make_pool(config.backend, config.workers, spec, config.eval_retries, config.ray_address, resources)
    except ParallelSetupError as error:
        raise SearchError(str(error)) from None
    pool.on_report = desk
    return pool


def _lmsearcher_graph(
    run: Running, config: SearchConfig, evaluator: Evaluator, ranker: Ranker, pool: Any = None
) -> tuple[StateGraph, dict]:
    shared = {
        "store": run.store, "evaluator": evaluator, "proposer": make_proposer(config, ranker), "ranker": ranker,
        "budget": config.budget, "pool_size": 1 if config.ranker in PROPOSER_DRIVEN else config.pool_size,
        "seed": config.seed, "on_progress": run.on_progress, "target": config.target, "limits": run.limits,
        "reading": Reading(config.stopped_as, config.infeasible_as, config.scalarisation),
        "known": run.store.known(run.run_id), "queue": run.store.queued(run.run_id),
    }  # fmt: skip
    if config.asynchronous():
        from agent.loops.asynchronous import AsyncParts, build_async_graph, initial_state

        return build_async_graph(AsyncParts(pool=pool, **shared)), dict(initial_state(run.run_id))
    parts = LoopParts(
        evaluate=_tool_caller(evaluator, config.simulated_cost_s, run.desk),
        batch=config.batch,
        evaluate_many=pool.evaluate_all if pool is not None else None,
        **shared,
    )
    first = run.store.last_iteration(run.run_id) + 1  # 0, or after the steps of an ask/tell study
    return build_graph(parts), {"run_id": run.run_id, "iteration": first, "pool": [], "chosen": [], "done": False}


def _collm_graph(run: Running, config: SearchConfig, evaluator: Evaluator, agents: Any) -> tuple[StateGraph, dict]:
    from agent.loops.collm import CollmParts, build_collm_graph, initial_state

    parts = CollmParts(
        store=run.store,
        evaluator=evaluator,
        evaluate=_tool_caller(evaluator, config.simulated_cost_s, run.desk),
        agents=agents,
        budget=config.budget,
        seed=config.seed,
        on_progress=run.on_progress,
        target=config.target,
        limits=run.limits,
    )
    return build_collm_graph(parts), dict(initial_state(run.run_id))


def _as_is(ncode: str, outcome: Outcome) -> Outcome:
    return outcome


def _tool_caller(evaluator: Evaluator, simulated_cost_s: float, desk: ReportDesk):
    """The evaluator node calls the evaluator through its LangChain tool; reports go to the run's desk."""
    from tools.evaluator import Outcome

    tool = make_evaluator_tool(evaluator, simulated_cost_s, desk.decide_for)

    def call(ncode: str) -> Outcome:
        return Outcome(**tool.invoke({"ncode": ncode}))

    return call


__all__ = ["Progress", "RunResult", "Search", "SearchConfig", "SearchError"]
