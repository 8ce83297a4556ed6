"""``python main.py dashboard``: its one-line errors, and a live search seen in a real headless Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import main
from agent.runs.optuna_mirror import mirror_path
from tests.browser import needs_chromium, rendered_text

ROOT = Path(__file__).resolve().parents[3]
LAG_LIMIT_S = 5.0  # an evaluation is in the dashboard's API within this long of its row in the run database


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def search(db: Path, run_id: str, *flags: str) -> None:
    assert main(["--ranker", "evolution", "--budget", "3", "--db", str(db), "--run-id", run_id, "--quiet", *flags]) == 0


def test_missing_database(tmp_path, capsys):
    assert main(["dashboard", "--db", str(tmp_path / "none.db")]) == 2
    assert "none.db does not exist; run a search first or pass --db" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_optuna_dashboard_not_installed(tmp_path, capsys, monkeypatch):
    search(tmp_path / "s.db", "r")
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as when not installed
    assert main(["dashboard", "--db", str(tmp_path / "s.db")]) == 2
    assert "optuna-dashboard is not installed; pip install '.[dashboard]'" in capsys.readouterr().err


def test_ctrl_c_does_not_wait_for_a_stuck_sync(tmp_path, capsys, monkeypatch):
    """A sync stuck on a busy database must not keep the dashboard from stopping. Here the stuck sync is a
    stand-in that ignores its stop event (a real stuck SQLite lock cannot be made to order), and the server
    returns at once, as on Ctrl-C."""
    pytest.importorskip("optuna_dashboard")
    from agent.cli import dashboard
    from agent.runs.optuna_mirror import OptunaMirror

    search(tmp_path / "s.db", "r")
    stuck, release = threading.Event(), threading.Event()

    def stuck_sync(self, stop=None) -> int:
        stuck.set()
        release.wait(60)
        return 0

    monkeypatch.setattr(OptunaMirror, "sync", stuck_sync)
    monkeypatch.setattr(dashboard, "serve", lambda *args, **kwargs: stuck.wait(10))
    monkeypatch.setattr(dashboard, "STOP_WAIT_S", 0.2)
    capsys.readouterr()
    try:
        assert main(["dashboard", "--db", str(tmp_path / "s.db"), "--port", str(free_port())]) == 0
        assert "stopped mid-sync; the next dashboard completes the mirror" in capsys.readouterr().err
    finally:
        release.set()


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_kill_stops_it_even_as_a_background_job(tmp_path, how):
    """A shell's background job starts with SIGINT ignored: the dashboard must still stop on it, and on
    SIGTERM (``kill PID``), with exit code 0."""
    pytest.importorskip("optuna_dashboard")
    db, port = tmp_path / "s.db", free_port()
    search(db, "r")
    dashboard = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "main.py", "dashboard", "--db", str(db), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        wait_for("study in the API", lambda: study_ids(port).get("r"), 60, dashboard)
    finally:
        code = stop(dashboard, how)
    assert code == 0, dashboard.stdout.read()


SLOW_DASHBOARD = """
import sys, time
import optuna_dashboard
from agent.cli.main import main
from agent.runs.optuna_mirror import mirror_path

def slow_app(environ, start_response):
    time.sleep(2)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served"]

optuna_dashboard.wsgi = lambda storage: slow_app  # every request takes 2 s: the signal lands during one
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_request_still_stops_it(tmp_path, how):
    """wsgiref swallows any exception raised while it handles a request, a KeyboardInterrupt too; when the
    server ran in the main thread, a Ctrl-C that landed during a request was lost and the dashboard went on
    serving (seen in CI). The optuna-dashboard app is a stand-in here whose every request is slow."""
    pytest.importorskip("optuna_dashboard")
    db, port = tmp_path / "s.db", free_port()
    search(db, "r")
    dashboard = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", SLOW_DASHBOARD, "dashboard", "--db", str(db), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    answers: list[bytes] = []

    def slow_request() -> None:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
            answers.append(reply.read())

    try:
        wait_for("the server to listen", lambda: port_open(port), 60, dashboard)
        request = threading.Thread(target=slow_request)
        request.start()
        time.sleep(0.5)  # the request is being handled
    finally:
        code = stop(dashboard, how)
    request.join()
    assert code == 0, dashboard.stdout.read()
    assert answers == [b"served"]  # the request in progress was answered before the server stopped


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_port_in_use(tmp_path, capsys):
    pytest.importorskip("optuna_dashboard")
    search(tmp_path / "s.db", "r")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", "--db", str(tmp_path / "s.db"), "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use; pass another with --port" in capsys.readouterr().err


def wait_for(what: str, found: Callable[[], Any], limit_s: float, process: subprocess.Popen) -> Any:
    """Poll ``found`` until it returns something, failing after ``limit_s`` or when ``process`` exits."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the dashboard exited ({process.returncode}) while waiting for {what}"
        try:
            result = found()
        except OSError:  # not listening yet
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"no {what} after {limit_s} s")


def api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{path}", timeout=5) as answer:
        return json.load(answer)


def study_ids(port: int) -> dict[str, int]:
    return {s["study_name"]: s["study_id"] for s in api(port, "studies")["study_summaries"]}


def api_trials(port: int, study_id: int) -> int:
    return len(api(port, f"studies/{study_id}?after=0")["trials"])


def db_evaluations(db: Path, run_id: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return connection.execute("SELECT COUNT(*) FROM evaluations WHERE run_id = ?", [run_id]).fetchone()[0]


def stop(process: subprocess.Popen, how: int = signal.SIGKILL) -> int:
    """Send ``how``; a process still there after 15 s gets SIGABRT, which with ``-X faulthandler`` writes every
    thread's stack to its log (so a failure says where it hung), then SIGKILL."""
    if process.poll() is None:
        os.killpg(process.pid, how)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGABRT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):  # SIGABRT usually ended the group already
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


@needs_chromium
def test_a_running_search_appears_live_in_the_browser(tmp_path):
    pytest.importorskip("optuna_dashboard")
    db, port = tmp_path / "searches.db", free_port()
    search(db, "first-run-in-the-browser")
    logs = (tmp_path / "dashboard.log").open("w")
    dashboard = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "main.py", "dashboard", "--db", str(db), "--port", str(port)],
        cwd=ROOT, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    live = None
    try:
        first = wait_for("study in the API", lambda: study_ids(port).get("first-run-in-the-browser"), 60, dashboard)
        wait_for("its 3 trials in the API", lambda: api_trials(port, first) == 3, 30, dashboard)  # synced beside it
        assert "first-run-in-the-browser" in rendered_text(f"http://127.0.0.1:{port}/dashboard", tmp_path / "chromium")

        live = subprocess.Popen(
            [sys.executable, "main.py", "--ranker", "evolution", "--budget", "6", "--simulated-cost", "0.5",
             "--db", str(db), "--run-id", "live-search", "--quiet"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        study = wait_for("live study in the API", lambda: study_ids(port).get("live-search"), 60, dashboard)
        in_db, in_api = {}, {}  # evaluation count -> when first seen in the run database, in the dashboard's API
        deadline = time.monotonic() + 60
        while len(in_api) < 6 and time.monotonic() < deadline:
            now, evaluations, trials = time.monotonic(), db_evaluations(db, "live-search"), api_trials(port, study)
            in_db.update({n: now for n in range(1, evaluations + 1) if n not in in_db})
            in_api.update({n: now for n in range(1, trials + 1) if n not in in_api})
            time.sleep(0.1)
        assert sorted(in_api) == [1, 2, 3, 4, 5, 6], f"the dashboard showed {len(in_api)} of 6 evaluations in 60 s"
        lags = {n: in_api[n] - in_db[n] for n in in_api}
        assert max(lags.values()) < LAG_LIMIT_S, f"seconds from the run database to the dashboard: {lags}"
        assert live.wait(timeout=30) == 0
        page = rendered_text(f"http://127.0.0.1:{port}/dashboard/studies/{study}", tmp_path / "chromium")
        assert "live-search" in page and "Best Trial" in page
    finally:
        if live is not None:
            stop(live)
        code = stop(dashboard, signal.SIGINT)  # Ctrl-C: the server and the syncer stop
        logs.close()
    assert code == 0, (tmp_path / "dashboard.log").read_text()


def test_a_port_out_of_range_is_refused_before_the_mirror_is_made(tmp_path, capsys):
    db = tmp_path / "s.db"
    assert main(["--ranker", "random", "--budget", "2", "--db", str(db), "--quiet"]) == 0
    with pytest.raises(SystemExit) as exit_:
        main(["dashboard", "--db", str(db), "--port", "99999"])
    assert exit_.value.code == 2 and "a port is 1 to 65535, got 99999" in capsys.readouterr().err
    assert not mirror_path(db).exists()
