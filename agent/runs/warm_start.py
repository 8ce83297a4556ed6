"""What a run starts from: results known before it, configurations to evaluate first, and transfer sources.

A source is an earlier run (``RUN_ID`` in the same database, ``OTHER.db:RUN_ID`` in another), a results
file (``.csv`` or ``.json``: one row per configuration, given by an ``ncode``/``code`` column, a ``config``
cell or one column per slot, and scored by a column named after the run's metric or ``score``), or a list
of configurations (``.yaml``/``.json``, no scores). :func:`read_source` turns any of them into rows of this
run's space; :func:`warm_start_rows` decides what each becomes:

- ``--warm-start``: results of *this* task. They enter the history every ranker reads (so the search
  builds on them and never evaluates them again) without spending the budget; they are never the run's
  best or on its front. Rows without a score are queued: evaluated first, spending the budget.
- ``--transfer``: results of the same space on *another* dataset or task. Their scores are on another
  scale, so no ranker reads them as numbers: the source's ``transfer_top`` best configurations are queued
  instead, and what they score here becomes the run's first history (BENCHMARKS.md measures this).

Every row is read and checked before the run exists: a source of another space is one clear error.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tools.evaluator import Metric, Outcome
from tools.ncode import InvalidNCode, SearchSpace, Slot, decode, encode, normalize, validate

CODE_PREFIX = "c:"  # how `export --format csv` writes an NCode so that spreadsheets keep it as text
RESERVED = {
    "run_id", "task", "dataset", "metric", "direction", "iteration", "position", "ncode", "code", "score", "status",
    "fidelity", "cost_s", "error", "config", "metrics", "pareto",
}  # fmt: skip  # the columns of an export that are not metrics
STATUSES = ("ok", "failed", "infeasible", "stopped")
RESULT_FILES = (".csv", ".json")
CONFIG_FILES = (".yaml", ".yml", ".json")


class WarmStartError(ValueError):
    """A source that cannot start this run; the message names the source, the problem and the fix."""


@dataclass
class Source:
    """What one source holds, in this run's space."""

    label: str
    results: list[dict[str, Any]] = field(default_factory=list)  # ncode, config, score, status, metrics
    configurations: list[str] = field(default_factory=list)  # codes without a result
    maximize: bool = True  # the direction of the source's scores
    task: dict[str, Any] | None = None  # a run source: its task, dataset, metric and objective


def read_source(source: str, space: SearchSpace, metric: Metric, db: sqlite3.Connection, db_path: Path) -> Source:
    """Read ``source`` into codes of ``space``; ``db`` is this run's database (for a bare run id)."""
    before, colon, run_id = source.rpartition(":")
    if colon and before and Path(before).is_file():
        return _read_run(source, _read_only(Path(before)), run_id, space)
    path = Path(source)
    if path.suffix.lower() in (*RESULT_FILES, *CONFIG_FILES):
        if not path.is_file():
            raise WarmStartError(f"warm-start source {source}: no such file")
        return _read_file(path, space, metric)
    if db.execute("SELECT 1 FROM runs WHERE run_id = ?", [source]).fetchone():
        return _read_run(source, db, source, space)
    raise WarmStartError(
        f"warm-start source {source!r} is neither a file nor a run of {db_path}; give RESULTS.csv, RESULTS.json, "
        "CONFIGS.yaml, a RUN_ID of this database or OTHER.db:RUN_ID"
    )


def warm_start_rows(
    warm_start: Iterable[str],
    transfer: Iterable[str],
    transfer_top: int,
    task: dict[str, Any],
    space: SearchSpace,
    metric: Metric,
    judge: Callable[[str, Outcome], Outcome],
    db: sqlite3.Connection,
    db_path: Path,
) -> list[dict[str, Any]]:
    """The ``warm_starts`` rows of a new run (``RunStore.add_warm_starts``): known results, then queued codes.
    ``task`` is this run's task identity (a run given to ``--warm-start`` must share it); ``judge`` gives a
    known result its objective values and feasibility as the run's own results get them."""
    known: dict[str, dict[str, Any]] = {}
    queued: dict[str, dict[str, Any]] = {}
    for spec in warm_start:
        found = read_source(spec, space, metric, db, db_path)
        if found.task is not None and found.task != task:
            raise WarmStartError(
                f"--warm-start {spec}: that run searched {_describe(found.task)}, this one {_describe(task)}; its "
                f"scores are not results of this task. Use --transfer {spec} to start from its best configurations"
            )
        for row in found.results:
            outcome = judge(row["ncode"], Outcome(row["score"], dict(row["metrics"]), status=row["status"]))
            entry = {**row, "score": outcome.score, "status": outcome.status, "metrics": outcome.metrics,
                     "values": outcome.values}  # fmt: skip
            known.setdefault(row["ncode"], {"kind": "known", "source": found.label, **entry})
        for code in found.configurations:
            queued.setdefault(code, _queued(code, space, found.label))
    for spec in transfer:
        found = read_source(spec, space, metric, db, db_path)
        finished = [row for row in found.results if row["status"] == "ok" and row["score"] is not None]
        if not finished and not found.configurations:
            raise WarmStartError(f"--transfer {spec}: it holds no finished result to start from")
        best = sorted(finished, key=lambda row: -row["score"] if found.maximize else row["score"])
        for code in [row["ncode"] for row in best[:transfer_top]] + found.configurations:
            queued.setdefault(code, _queued(code, space, f"transfer: {found.label}"))
    return list(known.values()) + [row for code, row in queued.items() if code not in known]


def _queued(code: str, space: SearchSpace, label: str) -> dict[str, Any]:
    return {"kind": "queued", "source": label, "ncode": code, "config": decode(space, code), "status": "queued"}


def _describe(task: dict[str, Any]) -> str:
    named = [f"{key} {value}" for key, value in task.items() if value not in (None, "")]
    return ", ".join(named)


def task_identity(config: Any, dataset: str, metric: str) -> dict[str, Any]:
    """What makes two runs' scores comparable: the same task, dataset, metric and objective or command."""
    return {"task": config.task, "dataset": dataset or "", "metric": metric, "objective": config.objective,
            "command": config.command}  # fmt: skip


# runs --------------------------------------------------------------------------------------------


def _read_only(path: Path) -> sqlite3.Connection:
    """Another run database, opened so that reading it can never change it."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        connection.execute("SELECT 1 FROM runs LIMIT 1")
    except sqlite3.DatabaseError as error:
        raise WarmStartError(f"warm-start source {path}: not a run database ({error})") from None
    return connection


def _read_run(label: str, db: sqlite3.Connection, run_id: str, space: SearchSpace) -> Source:
    run = db.execute("SELECT task, dataset, metric, maximize, config FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if run is None:
        raise WarmStartError(f"warm-start source {label}: no run {run_id!r} in that database")
    task_name, dataset, metric, maximize, stored = run
    stored = json.loads(stored)
    task = {"task": task_name, "dataset": dataset or "", "metric": metric, "objective": stored.get("objective"),
            "command": stored.get("command")}  # fmt: skip
    found = Source(label, maximize=bool(maximize), task=task)
    query = "SELECT ncode, config, score, status, metrics FROM evaluations WHERE run_id = ? ORDER BY id"
    for ncode, config, score, status, metrics in db.execute(query, [run_id]):
        config = json.loads(config)
        try:
            validate(space, ncode)
            same = decode(space, ncode) == config
        except InvalidNCode:
            same = False
        if not same:
            raise WarmStartError(
                f"warm-start source {label}: its evaluation {ncode} ({config}) is not a configuration of space "
                f"{space.name!r}; warm starts and transfers need a run of the same space"
            )
        result = {"ncode": ncode, "config": config, "score": score, "status": status,
                  "metrics": json.loads(metrics or "{}")}  # fmt: skip
        found.results.append(result)
    if not found.results:
        raise WarmStartError(f"warm-start source {label}: run {run_id!r} holds no evaluation yet")
    return found


# files -------------------------------------------------------------------------------------------


def _read_file(path: Path, space: SearchSpace, metric: Metric) -> Source:
    """A results table (rows with a score are results, rows without are configurations) or a list of configs."""
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="") as handle:
                rows: Any = list(csv.DictReader(handle))
        elif path.suffix.lower() == ".json":
            rows = json.loads(path.read_text())
        else:
            rows = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError, csv.Error) as error:
        raise WarmStartError(f"warm-start source {path}: cannot be read ({error})") from None
    if isinstance(rows, dict) and isinstance(rows.get("evaluations"), list):  # `export --format json`
        rows = rows["evaluations"]
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
        raise WarmStartError(
            f"warm-start source {path}: expected a non-empty list of rows (one mapping per configuration)"
        )
    found = Source(str(path), maximize=metric.maximize)
    for number, row in enumerate(rows, start=1):
        try:
            code = _code_of(row, space)
        except (InvalidNCode, ValueError) as error:
            raise WarmStartError(f"warm-start source {path}, row {number}: {error}") from None
        score, status = _number(row.get(metric.name, row.get("score"))), str(row.get("status") or "ok")
        if status not in STATUSES:
            raise WarmStartError(f"warm-start source {path}, row {number}: status {status!r} is not one of {STATUSES}")
        if score is None and status == "ok":
            found.configurations.append(code)
            continue
        metrics = _metrics_of(row, space)
        result = {"ncode": code, "config": decode(space, code), "score": score, "status": status, "metrics": metrics}
        found.results.append(result)
    return found


def _code_of(row: dict[str, Any], space: SearchSpace) -> str:
    """The canonical code of a row: its code, its config cell, or its slot columns (CSV text matched to options)."""
    code = row.get("code") or row.get("ncode")
    if isinstance(code, str) and code:
        code = code.removeprefix(CODE_PREFIX)
        return validate(space, normalize(space, code))
    config = row.get("config")
    if isinstance(config, str) and config:
        config = json.loads(config)
    if not isinstance(config, dict):
        config = {slot.name: row[slot.name] for slot in space.slots if row.get(slot.name) not in (None, "")}
    config = {slot.name: _option(slot, config[slot.name]) for slot in space.slots if slot.name in config}
    return validate(space, encode(space, config))


def _option(slot: Slot, value: Any) -> Any:
    """A value as one of the slot's options: CSV cells are text, so '0.01' and '4' are matched by value."""
    if not isinstance(value, str) or value in slot.options:
        return value
    for option in slot.options:
        if str(option) == value:
            return option
    number = _number(value)
    if number is not None:
        return number
    raise ValueError(f"slot {slot.name!r} has no option {value!r}; options are {list(slot.options)}")


def _number(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _metrics_of(row: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """A row's other numbers: its ``metrics`` cell and every numeric column that is neither a slot nor an
    export's own column (how a constraint or a second objective finds its value)."""
    cell = row.get("metrics")
    metrics = dict(json.loads(cell) if isinstance(cell, str) and cell else cell if isinstance(cell, dict) else {})
    slots = {slot.name for slot in space.slots}
    for key, value in row.items():
        if key not in RESERVED and key not in slots and _number(value) is not None:
            metrics[key] = _number(value)
    return metrics


__all__ = ["Source", "WarmStartError", "read_source", "task_identity", "warm_start_rows"]
