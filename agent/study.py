"""The Python API: search your own objective as Optuna users call ``study.optimize(objective)``.

::

    from agent import SearchSpace, Slot, Study

    space = SearchSpace("mine", [Slot("depth", [2, 4, 8]), Slot("width", [64, 128, 256])])
    with Study.create("runs/s.db", space, "train:objective", metric="val_acc", ranker="evolution") as study:
        study.optimize(budget=50, workers=2)
        print(study.best, study.history[-5:])

A study is one run of a run database, driven by the same LangGraph loop, store and resume
as the CLI (``python main.py --resume RUN_ID`` continues a study whose objective is a
``module:function`` reference). ``ask``/``tell`` serve users who keep their own loop; what
they record is the same run, and ``optimize`` may follow them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import PROPOSER_DRIVEN, ConfigError, SearchConfig
from agent.driver import Search, SearchError, make_proposer, make_strategy, task_options
from agent.final import FinalPlan, FinalScore, run_final
from agent.loops.common import Limits, RankingScaffold, Reading, best_of
from agent.runs.store import Observation, pareto_front
from agent.strategies.rankers import Ranker
from agent.strategies.user_rankers import object_spec
from evaluators.judged import JudgedEvaluator
from evaluators.objective import ObjectiveEvaluator, outcome_of
from evaluators.references import reference_of
from evaluators.registry import judged, make_evaluator
from tools.evaluator import Evaluator, Outcome, scored_or_failed
from tools.ncode import InvalidNCode, SearchSpace, decode, encode, normalize, validate
from tools.spaces import space_to_dict

if TYPE_CHECKING:
    from agent.runs.mlflow_tracking import MlflowTracker

Objective = Callable[[dict[str, Any]], Any]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    """One configuration of a study: its NCode, its decoded slot values and, once told, its result."""

    ncode: str
    config: dict[str, Any]
    score: float | None = None
    status: str = "pending"  # pending (asked, not told) | ok | failed | infeasible
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    values: tuple[float, ...] | None = None  # a study of several objectives: each one's value, the score first


class Study:
    """One run of a run database, searched through Python. Create it with :meth:`create` or :meth:`load`."""

    def __init__(
        self, search: Search, run_id: str, objective: str | Objective | None, ranker: Ranker | None = None
    ) -> None:
        self._search, self.run_id, self._objective, self._ranker = search, run_id, objective, ranker
        self._evaluator: Evaluator | None = None
        self._asker: _AskParts | None = None  # built at the first ask
        self._orphans = list(search.store.pending(run_id))  # asked by an earlier process and never told
        self._mlflow: MlflowTracker | None = None  # ask/tell's MLflow sync (``mlflow=``), made at the first tell
        self._mlflow_sync: Callable[[Any], None] | None = None
        self._mlflow_warned = False

    # -- creating and loading --------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        db: str | Path,
        space: SearchSpace | str | Mapping[str, Any],
        objective: str | Objective | None = None,
        *,
        metric: str | list[str] = "score",
        maximize: bool | list[bool] = True,
        run_id: str | None = None,
        load_if_exists: bool = False,
        **options: Any,
    ) -> Study:
        """A new run in ``db``. ``objective`` is a function of the decoded configuration returning a number
        (or a dict with the score under ``metric``), or its ``module:function`` reference; None for a study
        driven only by ask/tell. ``options`` are any :class:`agent.config.SearchConfig` field
        (``ranker``, ``budget``, ``seed``, ``workers``, ``eval_timeout`` ...); ``ranker`` may also be a
        :class:`Ranker` object of yours, which the run names by its class (give it again to :meth:`load`).

        Several objectives: ``metric=["val_acc", "latency_ms"], maximize=[True, False]``; the run keeps a Pareto
        front (:attr:`pareto_front`). ``constraints=["params<=5e6"]`` makes results that break one infeasible;
        ``known_before=[count_params]``: functions of the configuration returning what is known without training
        it (importable ones, or their ``module:function``), so that a candidate over a limit is never trained.
        ``load_if_exists=True`` with a ``run_id`` the database holds loads that run instead (as Optuna's
        ``create_study``), whatever the other arguments say.

        ``warm_start=`` results of this objective from before (an earlier run's id, ``"other.db:RUN_ID"``, a
        results .csv/.json, or several in a list): the search reads them without spending its budget.
        ``transfer=`` a run or results of the same space on another dataset: its best configurations are
        evaluated first. :meth:`enqueue` adds configurations to evaluate first."""
        if load_if_exists and run_id is not None and Path(db).is_file():
            probe = Search(db)
            try:
                exists = probe.store.get_run(run_id) is not None
            finally:
                probe.close()
            if exists:
                ranker_object = options.get("ranker") if isinstance(options.get("ranker"), Ranker) else None
                return cls.load(db, run_id, objective if callable(objective) else None, ranker_object)
        reference = objective if isinstance(objective, str) or objective is None else reference_of(objective)
        space_definition = space_to_dict(space) if isinstance(space, SearchSpace) else space
        if isinstance(options.get("constraints"), list | tuple):  # numbers; a string is CoLLM-NAS's words
            options = {key: value for key, value in options.items() if key != "constraints"} | {
                "constraint": list(options["constraints"])
            }
        if options.get("known_before"):
            options = {**options, "known_before": known_before_specs(options["known_before"])}
        for key in ("warm_start", "transfer"):  # one source or several
            if isinstance(options.get(key), str | Path):
                options = {**options, key: [str(options[key])]}
        metrics, minimize = objective_specs(metric, maximize)
        fixed = {"task": "objective", "space": space_definition, "objective": reference, "metric": metrics}
        ranker = options.get("ranker")
        if isinstance(ranker, type):
            raise ConfigError(
                f"ranker= takes a name, a 'module:name' reference or a Ranker object, not the class {ranker.__name__}: "
                f"pass {ranker.__name__}() or {reference_of(ranker) or 'module:' + ranker.__name__!r}"
            )
        ranker_object = ranker if isinstance(ranker, Ranker) else None
        if ranker_object is not None:
            options = {**options, "ranker": object_spec(ranker_object)}
        config = SearchConfig.from_mapping({**options, **fixed, "minimize": minimize}, source="Study.create")
        search = Search(db)
        try:
            if run_id is not None and search.store.get_run(run_id) is not None:
                raise SearchError(
                    f"run {run_id!r} already exists in {db}; continue it with Study.load({str(db)!r}, {run_id!r}), "
                    "or pass load_if_exists=True"
                )
            study = cls(search, "", objective, ranker_object)
            study.run_id = search.create(config, study._build_evaluator(config), run_id)
        except BaseException:
            search.close()
            raise
        return study

    @classmethod
    def load(
        cls, db: str | Path, run_id: str, objective: str | Objective | None = None, ranker: Ranker | None = None
    ) -> Study:
        """An existing run; ``objective`` is needed only when the run's was a function that cannot be imported,
        ``ranker`` only when the run's was a Ranker object (one of the same class)."""
        if not Path(db).is_file():
            raise SearchError(f"database {db} does not exist; create the study first with Study.create")
        search = Search(db)
        try:
            search.stored_config(run_id)
        except BaseException:
            search.close()
            raise
        return cls(search, run_id, objective, ranker)

    def close(self) -> None:
        """Release the database and the ranker (a local model's server); a study told through ``tell`` with
        ``mlflow=`` ends its MLflow parent run (a last sync, the front and the plots)."""
        if self._mlflow is not None:
            self._mlflow.close()
            self._mlflow = None
        if self._asker is not None:
            self._asker.ranker.close()
            self._asker = None
        self._search.close()

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- searching ---------------------------------------------------------------------------------

    @property
    def config(self) -> SearchConfig:
        return self._search.stored_config(self.run_id)

    def optimize(self, budget: int | None = None, workers: int | None = None, on_progress: Any = None) -> None:
        """Search until the run holds ``budget`` evaluations (default: the budget it was created with).
        Resumes where an interrupted run stopped; a larger budget continues a finished one."""
        overrides = {key: value for key, value in (("budget", budget), ("workers", workers)) if value is not None}
        run = self._search.store.get_run(self.run_id)
        if run["n_evaluations"] >= overrides.get("budget", run["budget"]):
            return
        objective = self._objective if callable(self._objective) else None
        self._mlflow = self._mlflow_sync = None  # the search syncs MLflow itself; a later tell finds what it logged
        self._search.resume(self.run_id, on_progress, objective, self._ranker, **overrides)

    def ask(self) -> Trial:
        """The next configuration to evaluate, chosen by the study's proposer and ranker as ``optimize``
        would; codes asked and not yet told are never proposed again.

        Not bounded by the budget: your loop decides how many, as with Optuna's ask/tell. A run told past its
        budget has its budget raised to what it holds (``tell``), so a later ``optimize()`` adds nothing and
        ``optimize(budget=N)`` adds up to N in all."""
        if self._orphans:
            code = self._orphans.pop(0)
            return Trial(code, decode(self.evaluator.space, code))
        store, config = self._search.store, self.config
        iteration = store.last_iteration(self.run_id) + 1
        n = 1 if config.ranker in PROPOSER_DRIVEN else config.pool_size
        code = self._parts().pick_pending(self.run_id, iteration, self._observations(), store.pending(self.run_id), n)
        if code is None:
            raise SearchError(f"every code of space {self.evaluator.space.name!r} was asked for; none is left")
        return Trial(code, decode(self.evaluator.space, code))

    def enqueue(self, config: Mapping[str, Any] | str) -> Trial:
        """Evaluate this configuration (a dict of slot values, or its NCode) before any the search chooses, as
        Optuna's ``enqueue_trial``; it spends the budget as any evaluation. Kept with the run (a resumed search
        still evaluates it first)."""
        space, store = self.evaluator.space, self._search.store
        try:
            code = validate(space, normalize(space, config) if isinstance(config, str) else encode(space, config))
        except InvalidNCode as problem:
            raise SearchError(f"cannot enqueue {config!r}: {problem}") from None
        if self.config.strategy != "lmsearcher":
            raise SearchError("enqueue needs --strategy lmsearcher; CoLLM-NAS chooses every configuration itself")
        taken = store.has_evaluation(self.run_id, code) or code in {o.ncode for o in store.known(self.run_id)}
        if taken or code in store.queued(self.run_id):
            raise SearchError(f"{code} ({decode(space, code)}) is already evaluated, known or queued in this run")
        store.add_warm_starts(self.run_id, [{"kind": "queued", "source": "enqueue", "ncode": code,
                                             "config": decode(space, code), "status": "queued"}])  # fmt: skip
        if self._asker is not None:
            self._asker.queue.append(code)
        return Trial(code, decode(space, code))

    def tell(self, trial: Trial | str, result: Any = None, *, error: str | None = None) -> Trial:
        """Record the result of a configuration: a number, a dict of metrics holding the score, or
        ``error=`` (or a None result) for a failed evaluation. Each code is told once."""
        code = trial.ncode if isinstance(trial, Trial) else str(trial)
        store, space = self._search.store, self.evaluator.space
        try:
            code = validate(space, code)
        except InvalidNCode as problem:
            raise SearchError(f"cannot tell {code!r}: {problem}") from None
        if store.has_evaluation(self.run_id, code):
            raise SearchError(f"{code} was already told; each code is evaluated once per run")
        outcome = _told_outcome(result, error, self.evaluator.metric.name)
        if isinstance(self.evaluator, JudgedEvaluator):  # several objectives, or constraints
            outcome = self.evaluator.judge(code, outcome)
        iteration = store.pending(self.run_id).get(code, store.last_iteration(self.run_id) + 1)
        store.add_evaluation(self.run_id, iteration, 0, code, decode(space, code), outcome)
        store.clear_pending(self.run_id, code)
        history = self._observations()
        if len(history) > store.get_run(self.run_id)["budget"]:
            store.update_run(self.run_id, budget=len(history))
        self._parts().record_step(self.run_id, history, [(code, outcome)])
        self._sync_mlflow()
        config = decode(space, code)
        return Trial(code, config, outcome.score, outcome.status, outcome.metrics, outcome.error, outcome.values)

    def _sync_mlflow(self) -> None:
        """Told trials reach MLflow (``mlflow=``) as ``optimize``'s do, after each tell. MLflow that fails is said
        once and tried again at a later tell; the trial is recorded in the run database either way."""
        uri = self.config.mlflow
        if uri is None:
            return
        from agent.runs.mlflow_tracking import TrackingError, database, track

        if self._mlflow_sync is not None:
            self._mlflow_sync(None)
            return
        try:
            self._mlflow = track(uri, self._search.store, self.run_id)  # syncs what the run holds
        except TrackingError as error:
            if not self._mlflow_warned:
                self._mlflow_warned = True
                log.warning("%s; the trial is recorded, and MLflow is tried again at the next tell (python main.py "
                            "mlflow --db %s --run-id %s logs what it lacks)", error, database(self._search.store),
                            self.run_id)  # fmt: skip
            return
        self._mlflow_sync = self._mlflow.watching(None)

    def final(self, top: int = 3, fidelity: float | None = None, seeds: int = 3) -> list[FinalScore]:
        """The paper's final stage: train the ``top`` best finished configurations again (``trial.fidelity`` =
        ``fidelity``, default as long as the search did), ``seeds`` seeds each; best mean first (the pick).
        Stored with the run, so calling it again after an interruption trains only what is missing."""
        objective = self._objective if callable(self._objective) else None
        plan = FinalPlan(top, fidelity, seeds)
        return run_final(self._search.store, self.run_id, self.config, plan, objective)

    # -- results -----------------------------------------------------------------------------------

    @property
    def history(self) -> list[Trial]:
        """Every evaluation, in the order it was recorded."""
        return [
            Trial(row["ncode"], row["config"] if isinstance(row["config"], dict) else decode(self.evaluator.space,
                  row["ncode"]), row["score"], row["status"], row["metrics"], row["error"],
                  None if row["objective_values"] is None else tuple(row["objective_values"]))
            for row in self._search.store.evaluations(self.run_id)
        ]  # fmt: skip

    @property
    def best(self) -> Trial | None:
        """The best finished evaluation so far (None before the first). A run of several objectives has no one
        best: it raises, naming :attr:`pareto_front`."""
        objectives = self.evaluator.objectives
        if len(objectives) > 1:
            names = ", ".join(objective.spec() for objective in objectives)
            raise SearchError(f"this study has {len(objectives)} objectives ({names}): no one trial is best; read "
                              "study.pareto_front")  # fmt: skip
        best = best_of(self._observations(), self.evaluator.metric)
        return next((trial for trial in self.history if best is not None and trial.ncode == best.ncode), None)

    @property
    def known(self) -> list[Trial]:
        """The results the study started from (``warm_start=``): read by the search, never counted in it."""
        return [
            Trial(row["ncode"], row["config"], row["score"], row["status"], row["metrics"], None,
                  None if row["objective_values"] is None else tuple(row["objective_values"]))
            for row in self._search.store.warm_starts(self.run_id, "known")
        ]  # fmt: skip

    @property
    def pareto_front(self) -> list[Trial]:
        """The finished, feasible trials no other one beats on every objective (one objective: the best)."""
        front = {o.ncode for o in pareto_front(self._observations(), self.evaluator.objectives)}
        return [trial for trial in self.history if trial.ncode in front]

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = self._build_evaluator(self.config)
        return self._evaluator

    def _build_evaluator(self, config: SearchConfig) -> Evaluator:
        objective = self._objective if callable(self._objective) else None
        if config.task == "objective" and config.objective is None and objective is None:
            ask_tell = _AskTellOnly(config)  # asked and told from outside; nothing to call
            if not config.objectives and not config.constraint:
                return ask_tell
            return judged(
                ask_tell, config.objectives, config.constraint, config.known_before, config.evaluate_known_infeasible
            )
        return make_evaluator(config.task, task_options(config, objective))

    def _observations(self) -> list[Observation]:
        return [observation for _, observation in self._search.store.observations(self.run_id)]

    def _parts(self) -> _AskParts:
        """The proposer and ranker of ask (built at the first call: a local ranker starts its server)."""
        if self._asker is None:
            config = self.config
            ranker = make_strategy(config, self.evaluator.space, self._ranker)
            proposer = make_proposer(config, ranker)
            store = self._search.store
            self._asker = _AskParts(
                store, self.evaluator, proposer, ranker, config.budget, config.seed, known=store.known(self.run_id),
                queue=store.queued(self.run_id),
                reading=Reading(infeasible_as=config.infeasible_as, scalarisation=config.scalarisation),
            )  # fmt: skip
        return self._asker


@dataclass
class _AskParts(RankingScaffold):
    """What ask and tell share with the loops: proposing, deciding, and ending a step."""

    store: Any
    evaluator: Evaluator
    proposer: Any
    ranker: Any
    budget: int
    seed: int
    on_progress: Any = None
    target: float | None = None
    limits: Limits = field(default_factory=Limits)
    reading: Reading = field(default_factory=Reading)
    known: list[Observation] = field(default_factory=list)
    queue: list[str] = field(default_factory=list)
    dropped: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # common.RankingScaffold
    repaired: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # common.RankingScaffold


class _AskTellOnly(ObjectiveEvaluator):
    """The space and metric of a study without an objective: ``optimize`` would have nothing to call."""

    def __init__(self, config: SearchConfig) -> None:
        super().__init__(config.space, _no_objective, config.metric, not config.minimize)


def _no_objective(config: dict[str, Any]) -> Any:
    raise SearchError("this study has no objective; evaluate asked configurations yourself and tell the results")


def objective_specs(metric: str | list[str], maximize: bool | list[bool]) -> tuple[str | list[str], bool]:
    """``metric`` and ``maximize`` as the config takes them: one metric and its direction, or a list of
    ``NAME:max``/``NAME:min`` specs (the first the score) and no ``minimize`` of its own."""
    if isinstance(metric, str):
        if not isinstance(maximize, bool):
            raise ConfigError(f"maximize= is one True or False for one metric, got {maximize!r}")
        return metric, not maximize
    directions = [maximize] * len(metric) if isinstance(maximize, bool) else list(maximize)
    if len(directions) != len(metric):
        raise ConfigError(f"metric= names {len(metric)} objectives but maximize= gives {len(directions)} directions")
    return [f"{name}:{'max' if up else 'min'}" for name, up in zip(metric, directions, strict=True)], False


def _told_outcome(result: Any, error: str | None, metric: str) -> Outcome:
    if error is not None or result is None:
        return Outcome(None, status="failed", error=error or "told without a result")
    if isinstance(result, Outcome):
        return scored_or_failed(result)
    try:
        return scored_or_failed(outcome_of(result, metric))
    except ValueError as problem:
        raise SearchError(f"cannot tell {result!r}: {problem}") from None


def known_before_specs(given: Any) -> list[str]:
    """``known_before=`` as the run stores it: table column names and ``module:function`` references, a function
    given as itself turned into its reference (the run must rebuild it on resume and in workers)."""
    specs = []
    for item in given if isinstance(given, list | tuple) else [given]:
        if callable(item):
            reference = reference_of(item)
            if reference is None:
                raise ConfigError(
                    f"known_before= got {getattr(item, '__qualname__', item)!r}, which another process cannot import "
                    "(a lambda, a closure, or a function of a script run as __main__): define it in a module and "
                    "pass it, or its 'module:function'"
                )
            item = reference
        specs.append(item)
    return specs


__all__ = ["Study", "Trial"]
