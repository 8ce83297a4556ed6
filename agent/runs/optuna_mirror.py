"""A mirror of a run database in an Optuna storage, so that optuna-dashboard shows searches live.

One Optuna study per run (named by run id), one trial per evaluation in the order recorded (trial
number = evaluation order), one parameter per slot: a float or int distribution for a numeric range (so the
dashboard draws a learning rate on a log axis), categorical otherwise. The mirror is derived data: it only
ever appends what the run database holds beyond it, and deleting the file loses nothing.

Optuna fixes a categorical parameter's choices per study, so they come from the run's space when it
can be had without building the task's evaluator (which may load a benchmark or a model): a space
stored with the run (table, command, objective) or a built-in task's fixed space. Otherwise (a plugin
task, a space file since moved) they are the values seen so far, and the study is rebuilt when a new
value appears; its ``choices`` user attribute says which.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from agent.config import SearchConfig
from agent.runs.report import run_objectives
from agent.runs.store import open_reader, pairs_of
from evaluators.objective import load_space
from tools.evaluator import EvaluatorSetupError
from tools.ncode import SearchSpace
from tools.objectives import Constraint, Objective, number_of, parse_constraint
from tools.spaces import BUILTIN_SPACES, nas_bench_graph_space

CHOICES_KEY, RANGES_KEY, RUN_KEY = "lmsearcher:choices", "lmsearcher:ranges", "lmsearcher:run_created_at"
FROM_SPACE, FROM_VALUES = "the task's space", "values seen so far (the study is rebuilt when a new one appears)"
EVALUATION_COLUMNS = (
    "iteration, ncode, config, score, cost_s, status, error, created_at, fidelity, metrics, objective_values"
)


def mirror_path(db: str | Path) -> Path:
    """Where a run database's mirror lives: beside it (``runs/searches.db`` -> ``runs/searches.optuna.db``)."""
    return Path(db).with_suffix(".optuna.db")


def run_space(run: dict[str, Any]) -> SearchSpace | None:
    """A run's space when it is cheap to have: stored with the run, or a built-in task's fixed space."""
    config = SearchConfig.from_stored(run["config"])
    if config.space is not None:
        try:
            return load_space(config.space, config.task)
        except EvaluatorSetupError:  # a space file that has moved since the run started
            return None
    if config.task == "nas_bench_graph":
        return nas_bench_graph_space(run["dataset"] or "cora")  # its ops depend on the dataset
    builder = BUILTIN_SPACES.get("hat" if config.task == "hat_mt" else config.task)
    return builder() if builder else None


def numeric_ranges(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """Each numeric slot's range as Optuna takes it, widened to its grid (a level rounded to 6 digits may sit
    a hair outside the bounds it was spread between)."""
    return {
        slot.name: {
            "int": slot.numeric.kind == "int",
            "log": slot.numeric.log,
            "low": min(slot.numeric.low, min(slot.options)),
            "high": max(slot.numeric.high, max(slot.options)),
        }
        for slot in space.slots
        if slot.numeric is not None
    }


def distribution(
    slot: str, choices: dict[str, list[CategoricalChoiceType]], ranges: dict[str, dict[str, Any]]
) -> BaseDistribution:
    """A slot's Optuna distribution: its numeric range, or its choices."""
    if slot not in ranges:
        return CategoricalDistribution(choices[slot])
    spec = ranges[slot]
    if spec["int"]:
        return IntDistribution(int(spec["low"]), int(spec["high"]), log=spec["log"])
    return FloatDistribution(spec["low"], spec["high"], log=spec["log"])


def categorical(value: Any) -> CategoricalChoiceType:
    """An option as Optuna can store it: None, bool, int, float and str as they are, anything else as JSON."""
    return value if value is None or isinstance(value, bool | int | float | str) else json.dumps(value, default=str)


@dataclass
class MirroredStudy:
    study_id: int
    run_created_at: float  # a run deleted and started again under its id gets a new study
    trials: int
    choices: dict[str, list[CategoricalChoiceType]]
    ranges: dict[str, dict[str, Any]]  # the numeric slots (none when the space is not at hand)


class OptunaMirror:
    """Appends a run database's new evaluations to an Optuna RDB storage; ``sync`` is idempotent.

    The run database must exist, and is only read (a search may be writing it; a file the user may not write
    is mirrored all the same); the mirror file is created when missing.
    """

    def __init__(self, db: str | Path, mirror: str | Path) -> None:
        self.store = open_reader(db)
        self.path = Path(mirror).resolve()
        self.url = f"sqlite:///{self.path}"
        self.storage = RDBStorage(self.url)
        self._studies: dict[str, MirroredStudy] = {}

    def __enter__(self) -> OptunaMirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.db.conn.close()
        self.storage.remove_session()
        self.storage.engine.dispose()

    def sync(self, stop: threading.Event | None = None) -> int:
        """Mirror every run's evaluations not mirrored yet; returns how many trials were added. Returns early
        once ``stop`` is set: a first sync of a large database takes about 10 ms an evaluation."""
        stop = stop or threading.Event()
        counts = dict(self.store.db.execute("SELECT run_id, COUNT(*) FROM evaluations GROUP BY run_id").fetchall())
        added = 0
        for run in self.store.list_runs():
            run["config"] = json.loads(run["config"])
            added += self._sync_run(run, counts.get(run["run_id"], 0), stop)
        return added

    def _sync_run(self, run: dict[str, Any], evaluations: int, stop: threading.Event) -> int:
        run_id = run["run_id"]
        study = self._studies.get(run_id)
        if study is None or study.run_created_at != run["created_at"]:
            study = self._studies[run_id] = self._open_study(run)
        if study.trials >= evaluations:  # the common case once synced: the mirror is not even read
            return 0
        rows = self._evaluations(run_id, study.trials)
        choices = widened(study.choices, (row["config"] for row in rows))
        if choices != study.choices:  # a value outside the study's choices, which Optuna fixes per study
            study = self._studies[run_id] = self._with_choices(run, study, choices)
            rows = self._evaluations(run_id, 0)
        decisions = self._decisions(run_id, min(row["iteration"] for row in rows))
        curves = self.store.curves(run_id)
        goal = Goal.of(run)
        added = 0
        for row in rows:
            if stop.is_set():
                break
            trial = trial_of(row, decisions, study.choices, curves.get(row["ncode"], []), goal, study.ranges)
            self.storage.create_new_trial(study.study_id, template_trial=trial)
            study.trials, added = study.trials + 1, added + 1
        return added

    def _open_study(self, run: dict[str, Any]) -> MirroredStudy:
        """The run's study as an earlier sync left it, or a new one (none yet, or one of an earlier run of that id)."""
        try:
            study_id = self.storage.get_study_id_from_name(run["run_id"])
        except KeyError:
            study_id = None
        if study_id is not None:
            attrs = self.storage.get_study_system_attrs(study_id)
            if attrs.get(RUN_KEY) == run["created_at"]:
                trials = self.storage.get_n_trials(study_id)
                return MirroredStudy(study_id, run["created_at"], trials, attrs[CHOICES_KEY], attrs.get(RANGES_KEY, {}))
            self.storage.delete_study(study_id)
        space = run_space(run)
        if space is None:
            return self._create_study(run, {}, FROM_VALUES)
        choices = {slot.name: [categorical(option) for option in slot.options] for slot in space.slots}
        return self._create_study(run, choices, FROM_SPACE, numeric_ranges(space))

    def _with_choices(
        self, run: dict[str, Any], study: MirroredStudy, choices: dict[str, list[CategoricalChoiceType]]
    ) -> MirroredStudy:
        """The study with wider choices: rebuilt when it has trials; an empty one keeps its id, so that a
        dashboard page showing it stays valid."""
        if study.trials:
            self.storage.delete_study(study.study_id)
            return self._create_study(run, choices, FROM_VALUES, study.ranges)
        self.storage.set_study_system_attr(study.study_id, CHOICES_KEY, choices)
        self.storage.set_study_user_attr(study.study_id, "choices", FROM_VALUES)
        return MirroredStudy(study.study_id, run["created_at"], 0, choices, study.ranges)

    def _create_study(
        self,
        run: dict[str, Any],
        choices: dict[str, list[CategoricalChoiceType]],
        source: str,
        ranges: dict[str, dict[str, Any]] | None = None,
    ) -> MirroredStudy:
        up, down = StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE
        directions = [up if objective.maximize else down for objective in Goal.of(run).objectives]
        study_id = self.storage.create_new_study(directions, study_name=run["run_id"])
        attrs = {
            "task": run["task"], "dataset": run["dataset"], "metric": run["metric"],
            "ranker": run["config"].get("ranker"), "choices": source,
        }  # fmt: skip
        for key, value in attrs.items():
            self.storage.set_study_user_attr(study_id, key, value)
        self.storage.set_study_system_attr(study_id, RUN_KEY, run["created_at"])
        self.storage.set_study_system_attr(study_id, CHOICES_KEY, choices)
        self.storage.set_study_system_attr(study_id, RANGES_KEY, ranges or {})
        return MirroredStudy(study_id, run["created_at"], 0, choices, ranges or {})

    def _evaluations(self, run_id: str, offset: int) -> list[dict[str, Any]]:
        query = f"SELECT {EVALUATION_COLUMNS} FROM evaluations WHERE run_id = ? ORDER BY id LIMIT -1 OFFSET ?"
        cursor = self.store.db.execute(query, [run_id, offset])
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
        for row in rows:
            row["config"] = json.loads(row["config"])
            row["metrics"] = json.loads(row["metrics"] or "{}")
            row["objective_values"] = json.loads(row["objective_values"] or "null")
        return rows

    def _decisions(self, run_id: str, first_iteration: int) -> dict[int, dict[str, Any]]:
        """The ranker's decision of each step from ``first_iteration`` on, as trial user attributes, with
        ``walked``: {pool code: the dropped draw it was walked inside from} (a file from before has no such column)."""
        rows = self.store.db["decisions"].rows_where("run_id = ? AND iteration >= ?", [run_id, first_iteration])
        return {
            row["iteration"]: {
                "ranker": row["ranker"], "pool_size": len(json.loads(row["pool"])), "raw_answer": row["raw_answer"],
                "fallback": bool(row["fallback"]),
                "walked": {code: source for source, code in pairs_of(row, "repaired")},
            }
            for row in rows
        }  # fmt: skip


def widened(
    choices: dict[str, list[CategoricalChoiceType]], configs: Iterable[dict[str, Any]]
) -> dict[str, list[CategoricalChoiceType]]:
    """``choices`` with every slot and value of ``configs`` that they lack, appended in the order seen."""
    result = {slot: list(options) for slot, options in choices.items()}
    for config in configs:
        for slot, value in config.items():
            options = result.setdefault(slot, [])
            if categorical(value) not in options:
                options.append(categorical(value))
    return result


@dataclass(frozen=True)
class Goal:
    """What a run's study optimises: its objectives (their directions), and its constraints, which Optuna keeps
    per trial as ``constraints`` (positive: broken), as ``constraints_func`` does, so that optuna-dashboard's
    Pareto-front view tells feasible from infeasible trials."""

    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def of(cls, run: dict[str, Any]) -> Goal:
        config = run["config"] if isinstance(run["config"], dict) else json.loads(run["config"])
        return cls(tuple(run_objectives(run)), tuple(map(parse_constraint, config.get("constraint") or [])))

    def violations(self, row: dict[str, Any]) -> list[float]:
        """Per constraint, how far the evaluation is past its bound (0 or less: kept)."""
        values = {**row["metrics"], "score": row["score"]}
        return [constraint.violation(number_of(values, constraint.name)) for constraint in self.constraints]


def trial_of(
    row: dict[str, Any],
    decisions: dict[int, dict[str, Any]],
    choices: dict[str, list[CategoricalChoiceType]],
    curve: Sequence[tuple[float, float]] = (),
    goal: Goal | None = None,
    ranges: dict[str, dict[str, Any]] | None = None,
) -> FrozenTrial:
    """One evaluation as an Optuna trial: COMPLETE with its score (each objective's value in a run of several),
    PRUNED with its last intermediate value (stopped by the run's scheduler), or FAIL (failed, no score). An
    infeasible result is COMPLETE with its constraint violations in a run of constraints, else FAIL. Its reports
    are the trial's intermediate values, which Optuna keys by whole steps. A slot of ``ranges`` is numeric."""
    goal = goal or Goal((Objective("score"),))
    several = len(goal.objectives) > 1
    values = row["objective_values"] if several else [row["score"]]
    scored = values is not None and all(v is not None and math.isfinite(v) for v in values)
    states = {"ok": TrialState.COMPLETE, "stopped": TrialState.PRUNED}
    if goal.constraints:
        states["infeasible"] = TrialState.COMPLETE
    state = states.get(row["status"]) if scored else None
    if state == TrialState.PRUNED and several:
        values = None  # a multi-objective study keeps no values for a pruned trial
    attrs = {"ncode": row["ncode"], "cost_s": row["cost_s"], "fidelity": row["fidelity"]}
    decision = dict(decisions.get(row["iteration"], {}))
    attrs["walked_inside_from"] = decision.pop("walked", {}).get(row["ncode"])  # its pool code repaired from a draw
    attrs.update(decision)
    if state is None or row["status"] == "infeasible":
        attrs.update(status=row["status"], error=row["error"])
    trial = FrozenTrial(
        number=-1,
        state=state or TrialState.FAIL,
        value=None,
        values=values if state else None,
        datetime_start=datetime.fromtimestamp(row["created_at"] - (row["cost_s"] or 0.0)),
        datetime_complete=datetime.fromtimestamp(row["created_at"]),
        params={slot: categorical(value) for slot, value in row["config"].items()},
        distributions={slot: distribution(slot, choices, ranges or {}) for slot in row["config"]},
        user_attrs={key: value for key, value in attrs.items() if value is not None},
        system_attrs={"constraints": goal.violations(row)} if goal.constraints and state else {},
        intermediate_values={round(step): value for step, value in curve if math.isfinite(value)},
        trial_id=-1,
    )
    trial._validate()
    return trial
