"""The run store: one SQLite file (WAL) holding runs, evaluations and ranker decisions.

LangGraph's checkpointer lives in the same file (tables ``checkpoints`` and
``writes``), so one file is one complete, resumable record. Several runs share a
file, told apart by run id. Nothing secret is ever written here: run configs hold
no API keys (rankers read keys from the environment only).

The evaluation record (schema 2), one row of ``evaluations`` per started configuration, the same
for multi-fidelity and multi-objective runs: ``score`` is the run's metric (its first objective);
``status`` says what the score is (``ok``: a finished evaluation, the only kind that can be the
best or on the Pareto front; ``stopped``: ended early by the run's scheduler, ``score`` being its
last intermediate value; ``failed``; ``infeasible``: it broke a constraint, its values kept);
``fidelity`` the step the score was measured at (an epoch; None where a task has no steps);
``objective_values`` each objective's value in a run of several (the score first); ``metrics``
every other number it reported. What an evaluation reported while it ran is in ``reports`` (one
row per step), which schedulers decide from and the Optuna mirror shows as intermediate values.
Schema 1 files gain the new columns and tables when opened.

What a run started from is in ``warm_starts``, apart from its own evaluations: ``known`` rows are
results from before the run (they enter the history rankers read, never the budget, the best or the
front); ``queued`` rows are configurations to evaluate first (``study.enqueue``, a list of
configurations, or a ``--transfer`` source's best), which then spend the budget as any evaluation.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from tools.io_checks import file_in_the_way
from tools.objectives import Objective, pareto_indices

SCHEMA_VERSION = 2
OUR_TABLES = {
    "lmsearcher_meta", "runs", "evaluations", "decisions", "pending", "llm_calls", "conversations", "collm_rounds",
    "reports", "finals", "warm_starts",
}  # fmt: skip
LANGGRAPH_TABLES = {"checkpoints", "writes"}


class StoreError(RuntimeError):
    """The database file cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Observation:
    """One finished evaluation as searchers see it."""

    iteration: int
    ncode: str
    score: float | None
    status: str
    cost_s: float = 0.0
    fidelity: float | None = None
    values: tuple[float, ...] | None = None  # a run of several objectives: each one's value, the score first


def pareto_front(history: Sequence[Observation], objectives: Sequence[Objective]) -> list[Observation]:
    """The finished, feasible evaluations no other one dominates, in the order recorded."""
    finished = [o for o in history if o.status == "ok" and o.values is not None]
    points = [[objective.utility(v) for objective, v in zip(objectives, o.values, strict=True)] for o in finished]
    return [finished[i] for i in sorted(pareto_indices(points))]


def open_connection(path: str | Path, verify: bool = True) -> sqlite3.Connection:
    """Open (or create) a run database, refusing files that are not ours or are corrupt. Never overwrites.

    The file is only ever read through SQLite: opening and closing it with plain file
    I/O while a connection is open would drop this process's SQLite locks. ``verify`` reads
    every page first (``PRAGMA quick_check``, a fraction of a second for hundreds of MB), so
    that a corrupt file is refused before anything is written to it; a second connection to
    a file just verified may skip it.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise StoreError(f"{path} is not a file; pass a database file path with --db")
    blocking = file_in_the_way(path)
    if blocking is not None:
        raise StoreError(f"cannot use database {path}: {blocking} is a file, not a folder; pass another --db")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except (OSError, sqlite3.Error) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise StoreError(f"cannot open database {path}: {reason}; pass a --db path in a folder you can write") from None
    connection.execute("PRAGMA busy_timeout=10000")  # other processes may be writing the same file
    try:
        # Read first: SQLite rejects a file that is not a database before anything is written,
        # and a database of another program is refused before any PRAGMA changes its header.
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        problems = _retry_while_locked(lambda: _quick_check(connection)) if tables and verify else []
    except sqlite3.DatabaseError as error:
        connection.close()
        raise unusable(path, error) from None
    foreign = tables - OUR_TABLES - LANGGRAPH_TABLES
    if (tables and "lmsearcher_meta" not in tables) or foreign:
        connection.close()
        raise StoreError(
            f"{path} is a SQLite database of another program (tables: {', '.join(sorted(tables))}); "
            "it was left untouched. Pass a new file with --db"
        )
    if problems:
        connection.close()
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise StoreError(_corrupt_message(path, problems[0] + more))
    _retry_while_locked(lambda: connection.execute("PRAGMA journal_mode=WAL"))
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def _quick_check(connection: sqlite3.Connection) -> list[str]:
    """The problems SQLite finds in the file's pages; empty when it is sound."""
    lines = [line for (text,) in connection.execute("PRAGMA quick_check") for line in str(text).splitlines()]
    return [line for line in lines if line not in ("ok", "*** in database main ***")]


def _corrupt_message(path: str | Path, detail: str) -> str:
    return f"database {path} is corrupt: {detail}; it was left untouched. Restore it from a backup or pass another --db"


def unusable(path: str | Path, error: sqlite3.DatabaseError) -> StoreError:
    """One line for a database SQLite cannot read: not a database, corrupt, or another failure (locked, I/O)."""
    name = getattr(error, "sqlite_errorname", "")
    if name == "SQLITE_NOTADB":
        return StoreError(
            f"{path} is not an LM-Searcher database ({error}); it was left untouched. Pass another path with --db"
        )
    if name == "SQLITE_CORRUPT" or "malformed" in str(error):
        return StoreError(_corrupt_message(path, str(error)))
    return StoreError(f"cannot use database {path}: {error}; check the file, or pass another --db")


def _retry_while_locked(step: Any, attempts: int = 40) -> Any:
    """Run a setup step that two processes opening one new file may race on: while one switches
    the file to WAL, the other's statements fail at once with "database is locked" (SQLite's busy
    timeout does not cover that), or find a table the other has just created."""
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except sqlite3.OperationalError as error:
            if ("locked" not in str(error) and "already exists" not in str(error)) or attempt == attempts:
                raise
            time.sleep(0.05)


class RunStore:
    """Typed access to the run tables; every write is committed before it returns."""

    def __init__(self, connection: sqlite3.Connection, create_schema: bool = True) -> None:
        self.db = sqlite_utils.Database(connection)
        if create_schema:
            _retry_while_locked(self._create_schema)  # every statement is "if not exists": safe to repeat

    def _create_schema(self) -> None:
        meta = self.db["lmsearcher_meta"]
        meta.insert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key", ignore=True)
        self.db["runs"].create(
            {
                "run_id": str, "created_at": float, "updated_at": float, "status": str, "task": str,
                "dataset": str, "metric": str, "maximize": int, "budget": int, "config": str,
                "best_ncode": str, "best_score": float, "n_evaluations": int, "final_metrics": str, "error": str,
                "wall_s": float,
            },
            pk="run_id", if_not_exists=True, not_null={"status", "task", "budget"},
        )  # fmt: skip
        self.db["evaluations"].create(
            {
                "id": int, "run_id": str, "iteration": int, "position": int, "ncode": str, "config": str,
                "score": float, "metrics": str, "cost_s": float, "status": str, "error": str, "created_at": float,
                "fidelity": float, "objective_values": str,
            },
            pk="id", if_not_exists=True, foreign_keys=[("run_id", "runs", "run_id")],
        )  # fmt: skip
        added = [("runs", "wall_s", float), ("evaluations", "fidelity", float)]
        for table, column, kind in [*added, ("evaluations", "objective_values", str)]:  # a schema 1 file
            if column not in self.db[table].columns_dict:
                self.db[table].add_column(column, kind)
                meta.update("schema_version", {"value": str(SCHEMA_VERSION)})
        self.db["evaluations"].create_index(["run_id", "ncode"], unique=True, if_not_exists=True)
        self.db["reports"].create(
            {"id": int, "run_id": str, "ncode": str, "step": float, "value": float, "created_at": float},
            pk="id", if_not_exists=True, foreign_keys=[("run_id", "runs", "run_id")],
        )  # fmt: skip
        self.db["reports"].create_index(["run_id", "ncode", "step"], unique=True, if_not_exists=True)
        # The final stage (agent/final.py): the best configurations trained again, one row per (code, seed, fidelity).
        self.db["finals"].create(
            {
                "id": int, "run_id": str, "ncode": str, "seed": int, "fidelity": float, "score": float, "status": str,
                "metrics": str, "cost_s": float, "error": str, "created_at": float,
            },
            pk="id", if_not_exists=True, foreign_keys=[("run_id", "runs", "run_id")],
        )  # fmt: skip
        self.db["warm_starts"].create(
            {
                "id": int, "run_id": str, "kind": str, "source": str, "ncode": str, "config": str, "score": float,
                "status": str, "objective_values": str, "metrics": str,
            },
            pk="id", if_not_exists=True, foreign_keys=[("run_id", "runs", "run_id")],
        )  # fmt: skip
        self.db["warm_starts"].create_index(["run_id", "kind", "ncode"], unique=True, if_not_exists=True)
        self.db["decisions"].create(
            {
                "id": int, "run_id": str, "iteration": int, "ranker": str, "pool": str, "chosen": str,
                "prompt_tokens": int, "completion_tokens": int, "latency_s": float, "raw_answer": str,
                "retries": int, "fallback": int, "error": str, "created_at": float, "dropped": str, "repaired": str,
            },
            pk="id", if_not_exists=True, foreign_keys=[("run_id", "runs", "run_id")],
        )  # fmt: skip
        for column in ("dropped", "repaired"):  # a file from before dropped (and repaired) candidates were kept
            if column not in self.db["decisions"].columns_dict:
                self.db["decisions"].add_column(column, str)
        self.db["decisions"].create_index(["run_id", "iteration"], unique=True, if_not_exists=True)
        # Evaluations in flight (asynchronous search): kept here, not only in memory, so that
        # a resumed driver re-submits them.
        self.db["pending"].create(
            {"run_id": str, "ncode": str, "iteration": int, "submitted_at": float},
            pk=("run_id", "ncode"), if_not_exists=True, foreign_keys=[("run_id", "runs", "run_id")],
        )  # fmt: skip
        self._create_collm_schema()

    def _create_collm_schema(self) -> None:
        """CoLLM-NAS: every LLM call, the Navigator's conversation, and the Coordinator's rounds."""
        self.db["llm_calls"].create(
            {
                "id": int, "run_id": str, "iteration": int, "role": str, "model": str, "prompt_tokens": int,
                "completion_tokens": int, "latency_s": float, "raw_answer": str, "transient_errors": int,
                "error": str, "created_at": float,
            },
            pk="id", if_not_exists=True, foreign_keys=[("run_id", "runs", "run_id")],
        )  # fmt: skip
        self.db["llm_calls"].create_index(["run_id", "iteration", "role"], unique=True, if_not_exists=True)
        self.db["conversations"].create(
            {"id": int, "run_id": str, "iteration": int, "position": int, "role": str, "content": str,
             "created_at": float},
            pk="id", if_not_exists=True, foreign_keys=[("run_id", "runs", "run_id")],
        )  # fmt: skip
        self.db["conversations"].create_index(["run_id", "position"], unique=True, if_not_exists=True)
        self.db["collm_rounds"].create(
            {
                "id": int, "run_id": str, "iteration": int, "proposed": str, "chosen": str, "valid": int,
                "invalid": int, "duplicates": int, "topped_up": int, "created_at": float, "rejected": str,
                "repaired": str,
            },
            pk="id", if_not_exists=True, foreign_keys=[("run_id", "runs", "run_id")],
        )  # fmt: skip
        for column in ("rejected", "repaired"):  # a file from before pre-evaluation rejection (and repair)
            if column not in self.db["collm_rounds"].columns_dict:
                self.db["collm_rounds"].add_column(column, str)
        self.db["collm_rounds"].create_index(["run_id", "iteration"], unique=True, if_not_exists=True)

    # runs -----------------------------------------------------------------
    def create_run(
        self, run_id: str, task: str, dataset: str, metric: str, maximize: bool, budget: int, config: dict
    ) -> None:
        now = time.time()
        self.db["runs"].insert(
            {
                "run_id": run_id, "created_at": now, "updated_at": now, "status": "created", "task": task,
                "dataset": dataset, "metric": metric, "maximize": int(maximize), "budget": budget,
                "config": json.dumps(config, sort_keys=True), "n_evaluations": 0,
            }
        )  # fmt: skip

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = list(self.db["runs"].rows_where("run_id = ?", [run_id]))
        if not rows:
            return None
        run = rows[0]
        run["config"] = json.loads(run["config"])
        return run

    def list_runs(self) -> list[dict[str, Any]]:
        return list(self.db["runs"].rows_where(order_by="created_at"))

    def update_run(self, run_id: str, **fields: Any) -> None:
        self.db["runs"].update(run_id, {**fields, "updated_at": time.time()})

    # warm starts ------------------------------------------------------------
    def add_warm_starts(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        """Record known results (``kind`` known) or configurations to evaluate first (``kind`` queued) at once."""
        stored = [
            {
                **row, "run_id": run_id, "config": json.dumps(row["config"], default=str),
                "metrics": json.dumps(row.get("metrics") or {}, default=str),
                "objective_values": None if row.get("values") is None else json.dumps(list(row["values"])),
            }
            for row in rows
        ]  # fmt: skip
        with self.db.conn:
            self.db["warm_starts"].insert_all([{k: v for k, v in r.items() if k != "values"} for r in stored])

    def warm_starts(self, run_id: str, kind: str) -> list[dict[str, Any]]:
        rows = list(self.db["warm_starts"].rows_where("run_id = ? AND kind = ?", [run_id, kind], order_by="id"))
        for row in rows:
            row["config"] = json.loads(row["config"])
            row["metrics"] = json.loads(row["metrics"] or "{}")
            row["objective_values"] = json.loads(row["objective_values"] or "null")
        return rows

    def known(self, run_id: str) -> list[Observation]:
        """The known results a run started from, as rankers read them (iteration -1: before the run)."""
        return [
            Observation(-1, row["ncode"], row["score"], row["status"], 0.0, None,
                        None if row["objective_values"] is None else tuple(row["objective_values"]))
            for row in self.warm_starts(run_id, "known")
        ]  # fmt: skip

    def queued(self, run_id: str) -> list[str]:
        """The codes to evaluate first, in order (those evaluated already included)."""
        query = "SELECT ncode FROM warm_starts WHERE run_id = ? AND kind = 'queued' ORDER BY id"
        return [row[0] for row in self.db.execute(query, [run_id])]

    # evaluations ------------------------------------------------------------
    def add_evaluation(
        self, run_id: str, iteration: int, position: int, ncode: str, config: dict, outcome: Any
    ) -> None:
        self.db["evaluations"].insert(
            {
                "run_id": run_id, "iteration": iteration, "position": position, "ncode": ncode,
                "config": json.dumps(config, default=str), "score": outcome.score,
                "metrics": json.dumps(outcome.metrics, default=str), "cost_s": outcome.cost_s,
                "status": outcome.status, "error": outcome.error, "created_at": time.time(),
                "fidelity": outcome.fidelity,
                "objective_values": None if outcome.values is None else json.dumps(list(outcome.values)),
            }
        )  # fmt: skip

    def has_evaluation(self, run_id: str, ncode: str) -> bool:
        query = "SELECT 1 FROM evaluations WHERE run_id = ? AND ncode = ?"
        return self.db.execute(query, [run_id, ncode]).fetchone() is not None

    def count_evaluations(self, run_id: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM evaluations WHERE run_id = ?", [run_id]).fetchone()[0]

    def observations(self, run_id: str, after_id: int = 0) -> list[tuple[int, Observation]]:
        """(row id, observation) of a run's evaluations with id > ``after_id``, in the order made."""
        columns = "id, iteration, ncode, score, status, cost_s, fidelity, objective_values"
        query = f"SELECT {columns} FROM evaluations WHERE run_id = ? AND id > ? ORDER BY id"
        return [
            (row[0], Observation(*row[1:-1], None if row[-1] is None else tuple(json.loads(row[-1]))))
            for row in self.db.execute(query, [run_id, after_id])
        ]

    def evaluations(self, run_id: str) -> Iterator[dict[str, Any]]:
        for row in self.db["evaluations"].rows_where("run_id = ?", [run_id], order_by="id"):
            row["config"] = json.loads(row["config"])
            row["metrics"] = json.loads(row["metrics"])
            row["objective_values"] = json.loads(row["objective_values"] or "null")
            yield row

    def prune_checkpoints(self, thread_id: str, keep: int = 4) -> None:
        """Drop all but the newest LangGraph checkpoints of a run: resuming needs only the
        latest, and keeping every one would grow the file by kilobytes per step."""
        if not self.db["checkpoints"].exists():
            return
        newest = "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? ORDER BY checkpoint_id DESC LIMIT ?"
        for table in ("checkpoints", "writes"):
            self.db.execute(
                f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_id NOT IN ({newest})",
                [thread_id, thread_id, keep],
            )

    # intermediate reports -------------------------------------------------
    def add_report(self, run_id: str, ncode: str, step: float, value: float) -> None:
        """One intermediate value; an evaluation started again (after a crash, a lost worker) first clears
        its earlier reports with :meth:`clear_reports`."""
        self.db["reports"].insert(
            {"run_id": run_id, "ncode": ncode, "step": step, "value": value, "created_at": time.time()}, replace=True
        )

    def clear_reports(self, run_id: str, ncode: str) -> None:
        self.db.execute("DELETE FROM reports WHERE run_id = ? AND ncode = ?", [run_id, ncode])

    def reports(self, run_id: str) -> list[tuple[int, str, float, float]]:
        """(row id, ncode, step, value) of a run's reports, in the order made."""
        query = "SELECT id, ncode, step, value FROM reports WHERE run_id = ? ORDER BY id"
        return [tuple(row) for row in self.db.execute(query, [run_id])]

    def curves(self, run_id: str) -> dict[str, list[tuple[float, float]]]:
        """Each evaluation's reports as a learning curve: NCode -> [(step, value), ...] by step."""
        curves: dict[str, list[tuple[float, float]]] = {}
        query = "SELECT ncode, step, value FROM reports WHERE run_id = ? ORDER BY ncode, step"
        for ncode, step, value in self.db.execute(query, [run_id]):
            curves.setdefault(ncode, []).append((step, value))
        return curves

    # the final stage --------------------------------------------------------
    def add_final(self, run_id: str, ncode: str, seed: int, fidelity: float | None, outcome: Any) -> None:
        self.db["finals"].insert(
            {
                "run_id": run_id, "ncode": ncode, "seed": seed, "fidelity": fidelity, "score": outcome.score,
                "status": outcome.status, "metrics": json.dumps(outcome.metrics, default=str),
                "cost_s": outcome.cost_s, "error": outcome.error, "created_at": time.time(),
            }
        )  # fmt: skip

    def finals(self, run_id: str, fidelity: float | None) -> list[dict[str, Any]]:
        """The final stage's evaluations at ``fidelity`` (None: the search's own), in the order made."""
        query = "SELECT * FROM finals WHERE run_id = ? AND fidelity IS ? ORDER BY id"
        cursor = self.db.execute(query, [run_id, fidelity])
        names = [column[0] for column in cursor.description]
        return [{**dict(zip(names, row, strict=True))} for row in cursor.fetchall()]

    def final_fidelities(self, run_id: str) -> list[float | None]:
        """The fidelities a run's final stage was run at, in the order first run."""
        query = "SELECT fidelity FROM finals WHERE run_id = ? GROUP BY fidelity ORDER BY MIN(id)"
        return [row[0] for row in self.db.execute(query, [run_id])]

    # pending evaluations (asynchronous search) ------------------------------
    def add_pending(self, run_id: str, ncode: str, iteration: int) -> None:
        self.db["pending"].upsert(
            {"run_id": run_id, "ncode": ncode, "iteration": iteration, "submitted_at": time.time()},
            pk=("run_id", "ncode"),
        )

    def pending(self, run_id: str) -> dict[str, int]:
        """NCode -> iteration of the run's evaluations in flight, oldest first."""
        query = "SELECT ncode, iteration FROM pending WHERE run_id = ? ORDER BY iteration, submitted_at"
        return dict(self.db.execute(query, [run_id]).fetchall())

    def clear_pending(self, run_id: str, ncode: str) -> None:
        self.db.execute("DELETE FROM pending WHERE run_id = ? AND ncode = ?", [run_id, ncode])

    def last_iteration(self, run_id: str) -> int:
        """The highest iteration of a run's evaluations and pending evaluations; -1 when none."""
        query = (
            "SELECT MAX(i) FROM (SELECT MAX(iteration) AS i FROM evaluations WHERE run_id = ? "
            "UNION ALL SELECT MAX(iteration) FROM pending WHERE run_id = ?)"
        )
        found = self.db.execute(query, [run_id, run_id]).fetchone()[0]
        return -1 if found is None else found

    # decisions --------------------------------------------------------------
    def record_decision(
        self, run_id: str, iteration: int, ranker: str, pool: list[str], decision: Any,
        dropped: Sequence[tuple[str, str]] = (), repaired: Sequence[tuple[str, str]] = (),
    ) -> None:  # fmt: skip
        """One row per iteration: a re-run rank step after a crash replaces its earlier row. ``dropped``: the
        candidates the proposer drew that were dropped before ranking as known to break a constraint, with why;
        ``repaired``: (a dropped code, the pool code walked inside the constraints from it)."""
        self.db["decisions"].upsert(
            {
                "run_id": run_id, "iteration": iteration, "ranker": ranker, "pool": json.dumps(pool),
                "dropped": json.dumps([list(pair) for pair in dropped]),
                "repaired": json.dumps([list(pair) for pair in repaired]),
                "chosen": json.dumps(decision.chosen), "prompt_tokens": decision.prompt_tokens,
                "completion_tokens": decision.completion_tokens, "latency_s": decision.latency_s,
                "raw_answer": decision.raw_answer, "retries": decision.retries,
                "fallback": int(decision.fallback), "error": decision.error, "created_at": time.time(),
            },
            pk=("run_id", "iteration"),
        )  # fmt: skip

    def decisions(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.db["decisions"].rows_where("run_id = ?", [run_id], order_by="iteration"))

    # CoLLM-NAS --------------------------------------------------------------
    def record_llm_call(
        self, run_id: str, iteration: int, role: str, model: str, completion: Any = None, error: str | None = None
    ) -> None:
        """One row per (round, role): a call re-made after a crash replaces its earlier row."""
        self.db["llm_calls"].upsert(
            {
                "run_id": run_id, "iteration": iteration, "role": role, "model": model,
                "prompt_tokens": completion.prompt_tokens if completion else None,
                "completion_tokens": completion.completion_tokens if completion else None,
                "latency_s": completion.latency_s if completion else None,
                "raw_answer": completion.text if completion else None,
                "transient_errors": completion.transient_errors if completion else None,
                "error": error, "created_at": time.time(),
            },
            pk=("run_id", "iteration", "role"),
        )  # fmt: skip

    def llm_calls(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.db["llm_calls"].rows_where("run_id = ?", [run_id], order_by="iteration, id"))

    def add_messages(self, run_id: str, iteration: int, messages: list[dict[str, str]]) -> None:
        """Append chat messages to a run's conversation, all or none (one transaction)."""
        connection = self.db.conn
        connection.execute("BEGIN IMMEDIATE")
        try:
            query = "SELECT COALESCE(MAX(position) + 1, 0) FROM conversations WHERE run_id = ?"
            start = connection.execute(query, [run_id]).fetchone()[0]
            connection.executemany(
                "INSERT INTO conversations (run_id, iteration, position, role, content, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (run_id, iteration, start + offset, message["role"], message["content"], time.time())
                    for offset, message in enumerate(messages)
                ],
            )
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def conversation(self, run_id: str) -> list[dict[str, Any]]:
        """A run's conversation in order: dicts with iteration, role and content."""
        query = "SELECT iteration, role, content FROM conversations WHERE run_id = ? ORDER BY position"
        return [{"iteration": row[0], "role": row[1], "content": row[2]} for row in self.db.execute(query, [run_id])]

    def record_round(
        self, run_id: str, iteration: int, proposed: list[str], chosen: list[str], invalid: int, duplicates: int,
        topped_up: int, rejected: Sequence[tuple[str, str]] = (), repaired: Sequence[tuple[str, str]] = (),
    ) -> None:  # fmt: skip
        """One Coordinator round; ``rejected``: (code, the constraint it breaks) for candidates known infeasible
        before evaluation; ``repaired``: (a rejected code, the chosen code walked inside the constraints from it).
        ``valid`` counts the Generator's codes chosen as written."""
        self.db["collm_rounds"].upsert(
            {
                "run_id": run_id, "iteration": iteration, "proposed": json.dumps(proposed),
                "chosen": json.dumps(chosen), "valid": len(chosen) - topped_up - len(repaired), "invalid": invalid,
                "duplicates": duplicates, "topped_up": topped_up, "created_at": time.time(),
                "rejected": json.dumps([list(pair) for pair in rejected]),
                "repaired": json.dumps([list(pair) for pair in repaired]),
            },
            pk=("run_id", "iteration"),
        )  # fmt: skip

    def collm_rounds(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.db["collm_rounds"].rows_where("run_id = ?", [run_id], order_by="iteration"))


def pairs_of(row: dict[str, Any], column: str) -> list[tuple[str, str]]:
    """A stored row's JSON list of pairs: a decision's ``dropped`` (code, why) or ``repaired`` (dropped code, the
    pool code walked inside from it), a round's ``rejected`` or ``repaired``. [] in older files, without it."""
    return [tuple(pair) for pair in json.loads(row.get(column) or "[]")]


def open_reader(path: str | Path) -> RunStore:
    """An existing database opened read-only, for commands that only read (runs, show, export, compare): a file
    the user may not write (a shared or archived result) is read all the same, and reading never changes it.

    A file that is empty, not ours or of an older schema goes through :func:`open_store` instead, which says
    what is wrong with it or upgrades it (or says why it cannot)."""
    connection = _read_only_connection(f"{Path(path).resolve().as_uri()}?mode=ro")
    if connection is None:
        return open_store(path)  # not a database, say: the writable open says what the file is
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = None
        if "lmsearcher_meta" in tables and tables <= OUR_TABLES | LANGGRAPH_TABLES:
            version = connection.execute("SELECT value FROM lmsearcher_meta WHERE key = 'schema_version'").fetchone()
        current = version is not None and int(version[0]) >= SCHEMA_VERSION and tables >= OUR_TABLES
        problems = _quick_check(connection) if current else []
    except sqlite3.DatabaseError as error:
        connection.close()
        raise unusable(path, error) from None
    if not current:
        connection.close()
        return open_store(path)
    if problems:
        connection.close()
        raise StoreError(_corrupt_message(path, problems[0]))
    return RunStore(connection, create_schema=False)


def _read_only_connection(uri: str) -> sqlite3.Connection | None:
    """A read-only connection, or None when SQLite cannot read the file so. A WAL file on a read-only disk
    without its -shm file opens only as immutable (SQLite cannot create the -shm there)."""
    for suffix in ("", "&immutable=1"):
        connection = sqlite3.connect(uri + suffix, uri=True, check_same_thread=False, isolation_level=None)
        try:
            connection.execute("PRAGMA busy_timeout=10000")  # a search may be writing it
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opening is lazy: fail here
            return connection
        except sqlite3.DatabaseError:
            connection.close()
    return None


def open_store(path: str | Path) -> RunStore:
    """A verified database with its tables ready; any failure of SQLite's is one StoreError."""
    connection = open_connection(path)
    try:
        return RunStore(connection)
    except sqlite3.DatabaseError as error:  # a read-only file, say: creating missing tables fails
        connection.close()
        raise unusable(path, error) from None
