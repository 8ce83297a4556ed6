"""Runs in MLflow (``--mlflow URI``): a search is a parent run, each of its evaluations a child run.

Why synced from the run database rather than logged as results come (as agent/runs/optuna_mirror.py mirrors
runs into Optuna): the run database is the record, written first, and MLflow is then told what it lacks. So a
search that was killed and resumed, or whose tracking server was down for a while, still ends with one parent
run and exactly one child run per evaluation: the parent is found again by its tags (the run's id and creation
time: a run deleted and started again under its id gets a new parent), and only evaluations without a finished
child are logged (a child half-logged when the process died is deleted and logged again). MLflow reads its
credentials (MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD) from the environment; none is stored.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.config import SearchConfig, run_file_text
from agent.runs.report import plot_curves, plot_pareto, plot_trajectory, run_objectives
from agent.runs.store import RunStore, pareto_front
from tools.io_checks import tcp_unreachable
from tools.objectives import Objective


class TrackingError(RuntimeError):
    """MLflow cannot be used (not installed, unreachable, refusing); the message names the problem and the fix."""


EXPERIMENT = "lm-searcher"
RUN_TAG, CREATED_TAG, DB_TAG = "lmsearcher.run_id", "lmsearcher.created_at", "lmsearcher.db"
INSTALL = 'pip install -e ".[mlflow]"'
PROBE_TIMEOUT_S = 5.0  # connecting to the server; MLflow's own retries of a refused connection take ~4 minutes
QUIET_AND_BRIEF = {  # MLflow's defaults print a line per child run on stdout, and retry a failing call ~4 minutes
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",  # a failed sync is tried again a minute later: the search goes on
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
RETRY_AFTER_S = 60.0  # after a failed sync mid-run, the search goes on this long before MLflow is tried again
CHILD_STATUS = {"ok": "FINISHED", "infeasible": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}
ENDED = {"finished": "FINISHED", "interrupted": "KILLED", "stopped": "FAILED"}  # run status -> parent's
BATCH = 100  # MLflow's limit of params (and of tags) per log_batch call
PARAM_LIMIT, TAG_LIMIT = 6000, 8000  # MLflow's longest param and tag values
COLUMNS = "id, iteration, ncode, config, score, metrics, cost_s, status, error, created_at, fidelity, objective_values"
log = logging.getLogger(__name__)


def tracking_uri(given: str) -> str:
    """The URI a run stores: ``--mlflow`` alone ("") is $MLFLOW_TRACKING_URI, else ./mlflow.db (MLflow's own
    default); a relative SQLite path is made absolute, so that a resume from another folder logs to the same
    store."""
    uri = given or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    path = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not path.startswith("/") and path != ":memory:":
        return f"sqlite:///{Path(path).resolve()}"
    return uri


def connect(given: str) -> tuple[Any, str]:
    """An MLflow client of ``given`` and the id of its ``lm-searcher`` experiment; one-line TrackingError when MLflow
    is missing or the server cannot be used."""
    uri = tracking_uri(given)
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise TrackingError(f"--mlflow needs MLflow, which is not installed: {INSTALL}") from None
    problem = unreachable(uri)
    if problem:
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {uri} ({problem}); start it (mlflow server --host HOST "
            "--port PORT) or pass another --mlflow URI"
        )
    for name, value in QUIET_AND_BRIEF.items():  # unless the user set them
        os.environ.setdefault(name, value)
    client = MlflowClient(uri)
    try:
        return client, experiment_id(client, uri)
    except TrackingError:
        raise
    except Exception as error:
        raise TrackingError(
            f"MLflow at {uri} cannot be used: {first_line(error)}; check the URI, and MLFLOW_TRACKING_TOKEN or "
            "MLFLOW_TRACKING_USERNAME/PASSWORD in the environment"
        ) from None


def unreachable(uri: str) -> str | None:
    """Why an HTTP tracking server cannot be connected to, quickly; None when it can (or the URI is local)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:  # a port out of range or not a number
        return str(error)
    return tcp_unreachable(parts.hostname or "localhost", port, PROBE_TIMEOUT_S)


def experiment_id(client: Any, uri: str) -> str:
    """The ``lm-searcher`` experiment's id, created when missing (by another process at once: taken). A local
    SQLite store keeps its artifacts beside it: MLflow's default, ./mlruns, is wherever a search was started."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        local = uri.startswith("sqlite:///") and not uri.endswith(":memory:")
        beside = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" if local else None
        try:
            return client.create_experiment(EXPERIMENT, artifact_location=beside and beside.as_uri())
        except Exception:
            experiment = client.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"the MLflow experiment {EXPERIMENT!r} was deleted; restore it (mlflow experiments restore) or remove "
            "it for good (mlflow gc)"
        )
    return experiment.experiment_id


def database(store: RunStore) -> str:
    """The run database's file, as the tag and the catch-up command name it."""
    return store.db.execute("PRAGMA database_list").fetchone()[2]


def first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return text.strip().splitlines()[0]


def key(name: str) -> str:
    """A param or metric name MLflow takes (alphanumerics, _ - . only, here)."""
    return re.sub(r"[^\w.\-]", "_", str(name)) or "_"


def text(value: Any) -> str:
    """A param value as MLflow's log_param writes one; a list or mapping as JSON."""
    return json.dumps(value, default=str, sort_keys=True) if isinstance(value, list | tuple | dict) else str(value)


def number(value: Any) -> float | None:
    """A metric value: a finite int or float, not a bool; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class MlflowTracker:
    """One run of a run database as an MLflow parent run with a child per evaluation; ``sync`` is idempotent."""

    def __init__(self, store: RunStore, run_id: str, uri: str) -> None:
        self.store, self.run_id, self.uri = store, run_id, tracking_uri(uri)
        self.client, self.experiment = connect(self.uri)
        self.parent: str | None = None  # found or created at the first sync (again after a failed one)
        self.done: set[str] = set()  # the NCodes that have a child run
        self.after_id, self.seen = 0, 0  # the last evaluation row read, and how many were read

    # -- syncing ------------------------------------------------------------------------------------

    def sync(self) -> int:
        """Log the evaluations that have no child run yet; returns how many were logged."""
        run = self.store.get_run(self.run_id)
        if run is None:
            raise TrackingError(f"no run {self.run_id!r} in {database(self.store)}; list its runs with 'runs'")
        if self.parent is None:
            self._open(run)
        objectives, added = run_objectives(run), 0
        try:
            for row in self._rows():
                if row["ncode"] not in self.done:
                    self._log_child(row, self.seen, objectives)
                    self.done.add(row["ncode"])
                    added += 1
                self.after_id, self.seen = row["id"], self.seen + 1
        except BaseException:
            self.parent = None  # found again at the next sync, which deletes a child left half-logged
            raise
        if added:
            self._log_progress(run, objectives)
        return added

    def finish(self, status: str | None) -> None:
        """A last sync, then the Pareto front's values and the run's plots; ``status`` (FINISHED, KILLED, FAILED)
        ends the parent run, None leaves it running."""
        self.sync()
        if status == "FINISHED":
            self._log_front(run_objectives(self.store.get_run(self.run_id)))
            self._log_plots()
        if status is not None:
            self.client.set_terminated(self.parent, status)

    def _open(self, run: dict[str, Any]) -> None:
        """Find the run's parent (or create it), log its options, and find the evaluations already logged: a
        child left running (its process died while logging it) or a second child of one evaluation is deleted."""
        created = repr(run["created_at"])
        found = [
            parent
            for parent in self._search(f"tags.`{CREATED_TAG}` = '{created}'")
            if parent.data.tags.get(RUN_TAG) == self.run_id
        ]
        if found:
            parent = found[0]
        else:
            tags = {RUN_TAG: self.run_id, CREATED_TAG: created, DB_TAG: database(self.store)}
            start = int(run["created_at"] * 1000)
            parent = self.client.create_run(self.experiment, start_time=start, tags=tags, run_name=self.run_id)
        parent_id = parent.info.run_id
        config = SearchConfig.from_stored(run["config"])
        options = {key(name): text(value) for name, value in config.stored().items() if value not in (None, "", [])}
        params = [(name, value) for name, value in options.items() if len(value) <= PARAM_LIMIT]
        self._log(parent_id, params=[(name, value) for name, value in params if name not in parent.data.params])
        self.client.log_text(parent_id, run_file_text(config), "run.yaml")  # every option, a long space included
        done: set[str] = set()
        for child in sorted(self._search(f"tags.mlflow.parentRunId = '{parent_id}'"), key=lambda c: c.info.start_time):
            ncode = child.data.tags.get("ncode")
            if child.info.status in ("RUNNING", "SCHEDULED") or ncode in done:
                self.client.delete_run(child.info.run_id)
            else:
                done.add(ncode)
        self.parent, self.done, self.after_id, self.seen = parent_id, done, 0, 0

    def _search(self, where: str) -> list[Any]:
        """Every active run of the experiment matching ``where``, page after page."""
        found, token = [], None
        while True:
            page = self.client.search_runs([self.experiment], where, max_results=1000, page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                return found

    def _rows(self) -> list[dict[str, Any]]:
        query = f"SELECT {COLUMNS} FROM evaluations WHERE run_id = ? AND id > ? ORDER BY id"
        cursor = self.store.db.execute(query, [self.run_id, self.after_id])
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]

    def _log_child(self, row: dict[str, Any], number_in_run: int, objectives: list[Objective]) -> None:
        """One evaluation as a child run: its configuration as params, its results as metrics, the curve it
        reported as a metric history by step, and how it ended as tags and the run's status."""
        when = int(row["created_at"] * 1000)
        tags = {"mlflow.parentRunId": self.parent, "ncode": row["ncode"], "evaluation": str(number_in_run),
                "iteration": str(row["iteration"]), "status": row["status"]}  # fmt: skip
        if row["error"]:
            tags["error"] = row["error"][:TAG_LIMIT]
        start = when - int((row["cost_s"] or 0.0) * 1000)
        child = self.client.create_run(self.experiment, start_time=start, tags=tags, run_name=row["ncode"])
        query = "SELECT step, value FROM reports WHERE run_id = ? AND ncode = ? ORDER BY step"
        curve = self.store.db.execute(query, [self.run_id, row["ncode"]]).fetchall()
        curve_key = key(objectives[0].name)
        values = json.loads(row["objective_values"] or "null") or [row["score"]]  # the metric's name: the score
        values = dict(zip((o.name for o in objectives), values, strict=False))
        results = {**json.loads(row["metrics"] or "{}"), **values, "score": row["score"], "cost_s": row["cost_s"]}
        results["fidelity"] = row["fidelity"]
        metrics = [(key(name), number(value), when, 0) for name, value in results.items()]
        metrics = [m for m in metrics if m[1] is not None and not (curve and m[0] == curve_key)]
        metrics += [(curve_key, v, when, round(step)) for step, v in curve if number(v) is not None]
        config = json.loads(row["config"])
        params = [(key(name), text(value)[:PARAM_LIMIT]) for name, value in config.items()]
        self._log(child.info.run_id, params=params, metrics=metrics)
        self.client.set_terminated(child.info.run_id, CHILD_STATUS.get(row["status"], "FINISHED"), end_time=when)

    def _log_progress(self, run: dict[str, Any], objectives: list[Objective]) -> None:
        """The parent's numbers after this many evaluations: the best score (a run of several objectives: the
        size of its front), as a history by evaluation count."""
        now, step = int(time.time() * 1000), self.seen
        metrics = [("evaluations", float(self.seen), now, step)]
        if len(objectives) > 1:
            front = pareto_front([o for _, o in self.store.observations(self.run_id)], objectives)
            metrics.append(("pareto_front_size", float(len(front)), now, step))
        elif run["best_score"] is not None:
            metrics.append((key(f"best_{run['metric']}"), float(run["best_score"]), now, step))
        self._log(self.parent, metrics=metrics)

    def _log_front(self, objectives: list[Objective]) -> None:
        """A run of several objectives: each objective's values along its front (step: the front's point, in
        the order of the first objective)."""
        if len(objectives) < 2:
            return
        front = sorted(pareto_front([o for _, o in self.store.observations(self.run_id)], objectives),
                       key=lambda o: o.values[0])  # fmt: skip
        now = int(time.time() * 1000)
        metrics = [(key(f"front_{objective.name}"), float(point.values[i]), now, step)
                   for step, point in enumerate(front) for i, objective in enumerate(objectives)]  # fmt: skip
        self._log(self.parent, metrics=metrics)

    def _log_plots(self) -> None:
        """The plots ``show`` draws: best so far, the Pareto front, the learning curves (those the run has)."""
        with tempfile.TemporaryDirectory() as folder:
            for name, plot in (("trajectory", plot_trajectory), ("pareto", plot_pareto), ("curves", plot_curves)):
                path = plot(self.store, self.run_id, Path(folder) / f"{name}.png")
                if path is not None:
                    self.client.log_artifact(self.parent, str(path), "plots")

    def _log(self, run_id: str, params: list[tuple] = (), metrics: list[tuple] = ()) -> None:
        """log_batch within MLflow's limits per call."""
        from mlflow.entities import Metric, Param

        params, metrics = [Param(*p) for p in params], [Metric(*m) for m in metrics]
        for first in range(0, max(len(params), len(metrics)), BATCH):
            self.client.log_batch(run_id, metrics=metrics[first : first + BATCH], params=params[first : first + BATCH])

    # -- inside a search ----------------------------------------------------------------------------

    def _probe(self) -> None:
        """Fail at once when the server is gone: MLflow's own retries would hold the search for minutes."""
        problem = unreachable(self.uri)
        if problem:
            raise ConnectionError(problem)

    def watching(self, on_progress: Callable[[Any], None] | None) -> Callable[[Any], None]:
        """``on_progress``, after syncing. A failed sync (the server went away) is said once and retried a minute
        later, while the search goes on: the run database keeps every result, and a later sync catches up."""
        retry_at, warned = 0.0, False

        def progress(update: Any) -> None:
            nonlocal retry_at, warned
            if time.monotonic() >= retry_at:
                try:
                    self._probe()
                    self.sync()
                except Exception as error:
                    retry_at = time.monotonic() + RETRY_AFTER_S
                    if not warned:
                        warned = True
                        log.warning(
                            "MLflow at %s failed (%s); the search goes on and the run database keeps every "
                            "result: MLflow is tried again each minute, and at the end", self.uri, first_line(error)
                        )  # fmt: skip
            if on_progress is not None:
                on_progress(update)

        return progress

    def close(self) -> None:
        """The end of a search session: the parent finished, killed (Ctrl-C) or failed, as the run ended. A server
        that cannot be reached now is said, with the command that catches up later."""
        status = ENDED.get(self.store.get_run(self.run_id)["status"], "FINISHED")  # running: it ended normally
        try:
            self._probe()
            self.finish(status)
        except Exception as error:
            log.warning(
                "MLflow at %s failed (%s); the run database holds every result: python main.py mlflow --db %s "
                "--run-id %s logs what MLflow lacks", self.uri, first_line(error), database(self.store), self.run_id,
            )  # fmt: skip


class NoTracking:
    """A search without ``--mlflow``."""

    def watching(self, on_progress: Callable[[Any], None] | None) -> Callable[[Any], None] | None:
        return on_progress

    def close(self) -> None:
        """Nothing to end."""


def track(uri: str | None, store: RunStore, run_id: str) -> MlflowTracker | NoTracking:
    """A search session's tracking: the run synced now (a resumed run's evaluations caught up, its parent running
    again), so that MLflow that cannot be used fails the search before it starts."""
    if uri is None:
        return NoTracking()
    tracker = MlflowTracker(store, run_id, uri)
    try:
        tracker.sync()
        tracker.client.update_run(tracker.parent, status="RUNNING")
    except TrackingError:
        raise
    except Exception as error:
        raise TrackingError(
            f"MLflow at {tracker.uri} failed: {first_line(error)}; check the server and the URI"
        ) from None
    return tracker
