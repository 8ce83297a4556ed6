"""Runs in MLflow (agent/runs/mlflow_tracking.py): real searches logged to a real MLflow tracking server
started here, or to a local SQLite tracking store; read back with MLflow's own client."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent import ConfigError, Study
from agent.cli.main import main
from agent.config import SearchConfig
from agent.runs.mlflow_tracking import EXPERIMENT, RUN_TAG, TrackingError, unreachable
from tests.agent import objectives
from tests.agent.test_study import SPACE
from tests.browser import needs_chromium, rendered_text
from tests.processes import wait_for

mlflow = pytest.importorskip("mlflow")
ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def start_server(folder: Path, port: int) -> subprocess.Popen:
    """``mlflow server`` on a SQLite backend in ``folder``, in a process group of its own (its uvicorn worker
    goes with it); the job runner of MLflow's GenAI features is off, as nothing here uses it."""
    folder.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    if not wait_for(lambda: healthy(uri) or server.poll() is not None, 90) or server.poll() is not None:
        stop_server(server)
        raise AssertionError(f"mlflow server on port {port} did not start")
    return server


def stop_server(server: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # stopped before
        os.killpg(server.pid, signal.SIGKILL)  # the group this test started: the server and its worker
    server.wait()


@dataclass
class Server:
    """The module's tracking server; a test may stop it and start it again on the same port and backend."""

    folder: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = start_server(self.folder, self.port)

    def stop(self) -> None:
        """Killed, and gone: a dying server's port still takes connections for a moment."""
        stop_server(self.process)
        assert wait_for(lambda: unreachable(self.uri) is not None, 10), "the killed server still answers"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("mlflow"), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def logged(uri: str, run_id: str) -> tuple[mlflow.entities.Run, list[mlflow.entities.Run]]:
    """The run's one parent run (it must be one) and its children, by evaluation number."""
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (parent,) = client.search_runs([experiment], f"tags.`{RUN_TAG}` = '{run_id}'")
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=1000)
    return parent, sorted(children, key=lambda child: int(child.data.tags["evaluation"]))


def evaluations(db: Path, run_id: str) -> list[dict]:
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        query = "SELECT * FROM evaluations WHERE run_id = ? ORDER BY id"
        return [dict(row) for row in connection.execute(query, [run_id])]


def recorded(db: Path, run_id: str) -> int:
    """How many evaluations a search in another process has recorded (0 while it creates the database)."""
    try:
        return len(evaluations(db, run_id)) if db.exists() else 0
    except sqlite3.OperationalError:  # no tables yet, or a write in progress
        return 0


def assert_one_child_per_evaluation(uri: str, db: Path, run_id: str) -> mlflow.entities.Run:
    """Child n is evaluation n: its NCode, decoded configuration, score, cost and status; returns the parent."""
    parent, children = logged(uri, run_id)
    rows = evaluations(db, run_id)
    assert [child.data.tags["ncode"] for child in children] == [row["ncode"] for row in rows]
    for child, row in zip(children, rows, strict=True):
        assert child.data.params == {slot: str(value) for slot, value in json.loads(row["config"]).items()}
        assert child.data.metrics["score"] == pytest.approx(row["score"])
        assert child.data.metrics["cost_s"] == pytest.approx(row["cost_s"])
        assert child.data.tags["status"] == row["status"] and child.info.status == "FINISHED"
    return parent


def main_py(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "main.py"), *args, "--quiet"]


def test_a_search_is_a_parent_run_with_a_child_run_per_evaluation(tmp_path, server):
    db, uri = tmp_path / "s.db", server.uri
    assert main(["--ranker", "evolution", "--budget", "6", "--db", str(db), "--run-id", "r", "--quiet",
                 "--mlflow", uri]) == 0  # fmt: skip
    parent = assert_one_child_per_evaluation(uri, db, "r")
    best = max(row["score"] for row in evaluations(db, "r"))
    assert parent.info.status == "FINISHED" and parent.info.run_name == "r"
    assert parent.data.metrics == {"evaluations": 6, "best_val_acc": best}
    assert {"task": "nas_bench_graph", "ranker": "evolution", "budget": "6", "mlflow": uri}.items() <= (
        parent.data.params.items()
    )
    client = mlflow.MlflowClient(uri)
    assert [m.value for m in client.get_metric_history(parent.info.run_id, "best_val_acc")][-1] == best
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert artifacts == {"run.yaml", "plots"}
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "plots")] == ["plots/trajectory.png"]
    # The mlflow command pushes only what MLflow lacks: nothing here.
    assert main(["mlflow", "--db", str(db)]) == 0
    assert_one_child_per_evaluation(uri, db, "r")


@needs_chromium
def test_the_run_and_its_evaluations_show_in_the_mlflow_ui(tmp_path, server):
    """What a user sees in the MLflow UI they started: the run in the experiment, its evaluations as children."""
    db = tmp_path / "s.db"
    assert main(["--ranker", "evolution", "--budget", "4", "--db", str(db), "--run-id", "seen-in-the-ui", "--quiet",
                 "--mlflow", server.uri]) == 0  # fmt: skip
    parent, children = logged(server.uri, "seen-in-the-ui")
    runs_page = rendered_text(f"{server.uri}/#/experiments/{parent.info.experiment_id}/runs", tmp_path / "chromium")
    assert "seen-in-the-ui" in runs_page
    run_page = rendered_text(
        f"{server.uri}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}", tmp_path / "chromium"
    )
    assert "Child runs" in run_page and all(child.info.run_name in run_page for child in children)
    assert "best_val_acc" in run_page and len(children) == 4


def test_a_killed_search_resumed_keeps_one_parent_and_one_child_per_evaluation(tmp_path, server):
    db, run_id, uri = tmp_path / "s.db", "killed", server.uri
    command = main_py("--ranker", "random", "--budget", "10", "--db", str(db), "--run-id", run_id,
                      "--simulated-cost", "0.3", "--mlflow", uri)  # fmt: skip
    search = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: recorded(db, run_id) >= 4, 60), "the search never got going"
    finally:
        search.send_signal(signal.SIGKILL)
        search.wait()
    parent, children = logged(uri, run_id)
    assert parent.info.status == "RUNNING" and len(children) >= 3
    # A kill that landed while a child was being logged leaves it half-logged, running: the resume replaces it.
    client = mlflow.MlflowClient(uri)
    half = client.create_run(parent.info.experiment_id, tags={"mlflow.parentRunId": parent.info.run_id,
                                                             "ncode": children[0].data.tags["ncode"]})  # fmt: skip
    resumed = subprocess.run(
        main_py("--resume", run_id, "--db", str(db)), cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(evaluations(db, run_id)) == 10
    parent = assert_one_child_per_evaluation(uri, db, run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["evaluations"] == 10
    assert client.get_run(half.info.run_id).info.lifecycle_stage == "deleted"


def test_an_unreachable_server_fails_at_start_in_one_line(tmp_path):
    db, uri = tmp_path / "s.db", f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        main_py("--ranker", "random", "--budget", "3", "--db", str(db), "--mlflow", uri),
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: cannot reach the MLflow tracking server at {uri} (Connection refused); start it (mlflow server "
        "--host HOST --port PORT) or pass another --mlflow URI"
    ]
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)  # no run was created


def test_a_server_lost_mid_run_is_said_once_and_caught_up_later(tmp_path, server, caplog):
    """The server dies after the 2nd evaluation: the search goes on to its budget, says so once, and names the
    command that catches up; once the server is back, that command logs the rest, nothing twice."""
    db = tmp_path / "s.db"

    def kill_after_two(progress) -> None:
        if progress.evaluations == 2:
            server.stop()

    try:
        options = {"run_id": "lost", "ranker": "random", "budget": 6, "mlflow": server.uri}
        with caplog.at_level(logging.WARNING), Study.create(db, SPACE, objectives.accuracy, **options) as study:
            study.optimize(on_progress=kill_after_two)
            assert len(study.history) == 6
        warnings = [r.getMessage() for r in caplog.records if "MLflow at" in r.getMessage()]
        assert len(warnings) == 2, warnings  # once mid-run, once at the end
        assert "the search goes on" in warnings[0] and "Connection refused" in warnings[0]
        assert f"python main.py mlflow --db {db} --run-id lost" in warnings[1]
    finally:
        if server.process.poll() is not None:
            server.start()  # for the tests after this one too
    assert main(["mlflow", "--db", str(db), "--run-id", "lost"]) == 0
    parent = assert_one_child_per_evaluation(server.uri, db, "lost")
    assert parent.info.status == "FINISHED"


def test_a_study_logs_curves_and_a_pareto_front_to_a_local_store(tmp_path):
    """Study.create(..., mlflow=) with a SQLite tracking URI: a learning curve is a metric history by epoch, and a
    run of two objectives logs its front's size and values."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with Study.create(tmp_path / "s.db", SPACE, objectives.learning_curve, metric="val_acc", run_id="curves",
                      ranker="random", budget=3, mlflow=uri) as study:  # fmt: skip
        study.optimize()
    parent, children = logged(uri, "curves")
    client = mlflow.MlflowClient(uri)
    for child in children:
        curve = client.get_metric_history(child.info.run_id, "val_acc")
        assert [m.step for m in curve] == list(range(1, 10))  # nine epochs, each reported
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "plots")} == {
        "plots/trajectory.png", "plots/curves.png",
    }  # fmt: skip
    with Study.create(
        tmp_path / "s.db",
        SPACE,
        objectives.accuracy_and_size,
        metric=["acc", "params"],
        maximize=[True, False],
        run_id="front",
        ranker="random",
        budget=8,
        mlflow=uri,
    ) as study:
        study.optimize()  # fmt: skip
        front = study.pareto_front
    parent, children = logged(uri, "front")
    assert len(children) == 8 and parent.data.metrics["pareto_front_size"] == len(front)
    assert sorted(m.value for m in client.get_metric_history(parent.info.run_id, "front_acc")) == sorted(
        trial.values[0] for trial in front
    )
    assert {"acc", "params", "score"} <= set(children[0].data.metrics)


def test_ask_and_tell_log_each_told_trial_and_a_later_optimize_adds_no_second_child(tmp_path):
    """A study driven by the user's own loop (ask/tell) reaches MLflow after each tell, as optimize's do; optimize
    after it and tells after that log each evaluation once; close ends the parent run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    db = tmp_path / "s.db"
    with Study.create(db, SPACE, objectives.accuracy, run_id="told", ranker="random", budget=4, mlflow=uri) as study:
        for number in range(1, 3):
            trial = study.ask()
            study.tell(trial, objectives.accuracy(trial.config))
            parent, children = logged(uri, "told")
            assert [child.data.tags["ncode"] for child in children] == [t.ncode for t in study.history]
            assert len(children) == number and parent.info.status == "RUNNING"
        study.optimize()  # two more, logged by the search's own sync
        trial = study.ask()
        study.tell(trial, error="out of memory")  # a failed trial is logged too, with its status
    parent, children = logged(uri, "told")
    rows = evaluations(db, "told")
    assert [child.data.tags["ncode"] for child in children] == [row["ncode"] for row in rows] and len(rows) == 5
    assert [child.data.tags["status"] for child in children] == ["ok"] * 4 + ["failed"]
    assert parent.info.status == "FINISHED"


def test_a_tell_whose_mlflow_fails_records_the_trial_and_says_so_once(tmp_path, monkeypatch, caplog):
    """MLflow failing after the study was created (simulated: the tracker cannot be made, as when the server went
    away) costs no result: each tell is recorded, the failure said once, with the command that catches up."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def gone(*args: object) -> None:
        raise TrackingError("MLflow at http://gone:5000 failed: connection refused")

    with Study.create(tmp_path / "s.db", SPACE, objectives.accuracy, run_id="lost", mlflow=uri) as study:
        monkeypatch.setattr("agent.runs.mlflow_tracking.track", gone)
        with caplog.at_level(logging.WARNING, logger="agent.study"):
            for _ in range(2):
                trial = study.ask()
                study.tell(trial, objectives.accuracy(trial.config))
        assert len(study.history) == 2
    warnings = [record.getMessage() for record in caplog.records if record.name == "agent.study"]
    assert len(warnings) == 1 and "python main.py mlflow --db" in warnings[0] and "--run-id lost" in warnings[0]


def test_a_password_in_the_uri_is_refused_and_a_missing_mlflow_named(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_PASSWORD"):
        SearchConfig(mlflow="https://me:secret@mlflow.example.com").check()
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import fails as when not installed
    with pytest.raises(TrackingError, match=r'pip install -e "\.\[mlflow\]"'):
        Study.create(tmp_path / "s.db", SPACE, objectives.accuracy, mlflow=f"sqlite:///{tmp_path / 'm.db'}")
