"""Parallel and asynchronous search: overlap, lost workers, a killed driver, and Ray.

Evaluations are padded with ``simulated_cost_s`` so that they overlap measurably and
a signal lands inside one. Workers report their process id in the outcome's metrics
(``worker_pid``), which is how these tests find a worker to kill.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import Study
from agent.cli.main import main
from agent.config import ConfigError
from agent.driver import Search, SearchConfig
from tests.agent.cli.test_resume import ROOT, main_py, wait_for_evaluations
from tests.agent.objectives import space_definition
from tests.processes import process_gone


def rows(db: Path, run_id: str) -> list[dict]:
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        query = "SELECT * FROM evaluations WHERE run_id = ? ORDER BY id"
        return [dict(row) for row in connection.execute(query, [run_id])]


def pending(db: Path, run_id: str) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("SELECT ncode FROM pending WHERE run_id = ?", [run_id])]


def chosen_codes(db: Path, run_id: str) -> list[str]:
    with sqlite3.connect(db) as connection:
        query = "SELECT chosen FROM decisions WHERE run_id = ? ORDER BY iteration"
        return [code for (chosen,) in connection.execute(query, [run_id]) for code in json.loads(chosen)]


def run_search(db: Path, run_id: str, **config) -> None:
    """A search with RE unless told otherwise: these tests are about workers, not the (default LLM) ranker."""
    search = Search(db)
    try:
        search.start(SearchConfig(**{"ranker": "evolution", **config}), run_id=run_id)
    finally:
        search.close()


def kill_a_worker_mid_evaluation(db: Path, run_id: str, killed: list[int], delay_s: float = 0.1) -> threading.Thread:
    """Once a worker has reported its pid, SIGKILL it while it works on its next evaluation."""

    def kill() -> None:
        deadline = time.monotonic() + 240  # Ray actors start slowly on a loaded machine
        while time.monotonic() < deadline:
            try:
                done = rows(db, run_id)
            except sqlite3.OperationalError:
                done = []  # tables not made yet
            if done:
                pid = json.loads(done[0]["metrics"])["worker_pid"]
                time.sleep(delay_s)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def assert_complete(db: Path, run_id: str, budget: int) -> list[dict]:
    done = rows(db, run_id)
    codes = [row["ncode"] for row in done]
    assert len(codes) == budget and len(set(codes)) == budget, "an evaluation was repeated or lost"
    assert sorted(chosen_codes(db, run_id)) == sorted(codes), "a decision's pick was not evaluated exactly once"
    assert pending(db, run_id) == []
    return done


def retried_after(done: list[dict], pid: int) -> list[dict]:
    """Evaluations whose first worker (``pid``) died and that then succeeded on another worker."""
    found = []
    for row in done:
        metrics = json.loads(row["metrics"])
        if metrics.get("attempts") == 2 and any(str(pid) in lost for lost in metrics.get("lost_workers", [])):
            assert row["status"] == "ok" and metrics["worker_pid"] != pid
            found.append(row)
    return found


def test_local_workers_evaluate_in_parallel(tmp_path: Path) -> None:
    db, budget, cost = tmp_path / "runs.db", 12, 0.3
    run_search(db, "par", budget=budget, workers=2, simulated_cost_s=cost, seed=3)
    done = assert_complete(db, "par", budget)
    assert all(row["status"] == "ok" for row in done)
    assert len({json.loads(row["metrics"])["worker_pid"] for row in done}) == 2
    windows = sorted((row["created_at"] - row["cost_s"], row["created_at"]) for row in done)
    overlaps = sum(later[0] < earlier[1] - 0.05 for earlier, later in itertools.pairwise(windows))
    assert overlaps >= budget // 2 - 1, f"evaluations did not overlap: {windows}"
    span = windows[-1][1] - windows[0][0]  # the evaluations' wall time, worker start-up excluded
    assert span < 0.8 * budget * cost, f"{budget} evaluations of {cost} s on 2 workers took {span:.2f} s"


def test_synchronous_batches_use_the_workers(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    run_search(db, "batch", budget=8, batch=4, workers=2, mode="sync", simulated_cost_s=0.2, ranker="random")
    done = assert_complete(db, "batch", 8)
    assert sorted({row["iteration"] for row in done}) == [0, 1]  # two steps of four
    assert len({json.loads(row["metrics"])["worker_pid"] for row in done}) == 2


def test_killed_local_worker_costs_a_retry(tmp_path: Path) -> None:
    db, budget, killed = tmp_path / "runs.db", 12, []
    killer = kill_a_worker_mid_evaluation(db, "lost", killed)
    run_search(db, "lost", budget=budget, workers=2, simulated_cost_s=0.3, seed=5)
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    done = assert_complete(db, "lost", budget)
    assert len(retried_after(done, killed[0])) == 1
    assert all(row["status"] == "ok" for row in done)


def test_worker_that_keeps_dying_is_recorded_as_failed(tmp_path: Path) -> None:
    db, killed = tmp_path / "runs.db", []
    killer = kill_a_worker_mid_evaluation(db, "gone", killed)
    run_search(db, "gone", budget=6, workers=2, simulated_cost_s=0.3, eval_retries=0)
    killer.join(timeout=5)
    done = assert_complete(db, "gone", 6)
    failed = [row for row in done if row["status"] == "failed"]
    assert len(failed) == 1 and f"worker process {killed[0]} killed by signal 9" in failed[0]["error"]


def test_driver_killed_with_work_in_flight_resumes_it(tmp_path: Path) -> None:
    db, run_id, budget = tmp_path / "runs.db", "crashed", 12
    flags = ("--ranker", "evolution", "--budget", str(budget), "--db", str(db), "--run-id", run_id)
    flags += ("--workers", "2", "--simulated-cost", "0.5")
    process = subprocess.Popen(
        main_py(*flags),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_evaluations(db, run_id, 3, process)
    time.sleep(0.2)  # both workers are inside an evaluation
    process.kill()
    process.wait(timeout=30)
    before = rows(db, run_id)
    in_flight = pending(db, run_id)
    assert 3 <= len(before) < budget and in_flight, "nothing was in flight when the driver died"
    assert not set(in_flight) & {row["ncode"] for row in before}
    workers = {json.loads(row["metrics"])["worker_pid"] for row in before}
    resumed = subprocess.run(
        main_py("--resume", run_id, "--db", str(db)), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    after = assert_complete(db, run_id, budget)
    assert after[: len(before)] == before, "an evaluation recorded before the kill was lost or changed"
    assert set(in_flight) <= {row["ncode"] for row in after}, "an evaluation in flight was not re-submitted"
    assert all(process_gone(pid) for pid in workers), "the dead driver's workers outlived it"


def test_parallel_options_are_checked() -> None:
    for bad, message in [
        ({"workers": 0}, "--workers"),
        ({"mode": "async", "batch": 2}, "drop --batch"),
        ({"backend": "slurm"}, "unknown backend"),
        ({"ray_address": "10.0.0.1:6379"}, "needs --backend ray"),
        ({"eval_retries": -1}, "--eval-retries"),
    ]:
        with pytest.raises(ConfigError, match=message):
            SearchConfig(**bad).check()
    assert SearchConfig(workers=4).asynchronous() and not SearchConfig(workers=4, batch=4).asynchronous()
    assert SearchConfig(mode="async").asynchronous() and not SearchConfig(workers=4, mode="sync").asynchronous()


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray", reason="pip install .[distributed]")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_search_survives_a_killed_actor(tmp_path: Path, local_ray: None) -> None:
    db, budget, killed = tmp_path / "runs.db", 10, []
    killer = kill_a_worker_mid_evaluation(db, "ray", killed, delay_s=0.2)
    run_search(db, "ray", budget=budget, workers=2, backend="ray", simulated_cost_s=0.5, seed=2)
    killer.join(timeout=5)
    assert killed, "no Ray worker was killed"
    done = assert_complete(db, "ray", budget)
    assert len(retried_after(done, killed[0])) == 1
    assert all(row["status"] == "ok" for row in done)


def test_ray_workers_report_to_the_driver_and_are_stopped_by_its_scheduler(tmp_path: Path, local_ray: None) -> None:
    """Reports travel from Ray actors through the report desk actor to the driver's scheduler, and back."""
    db = tmp_path / "s.db"
    with Study.create(
        db, space_definition(), "tests.agent.objectives:learning_curve", metric="acc", ranker="random", budget=10,
        run_id="r", scheduler="asha", max_fidelity=9, workers=2, backend="ray",
    ) as study:  # fmt: skip
        study.optimize()
        history = study.history
    assert len({trial.ncode for trial in history}) == 10
    assert {"ok", "stopped"} <= {trial.status for trial in history}
    with sqlite3.connect(db) as connection:
        reported = connection.execute("SELECT COUNT(*) FROM reports").fetchone()[0]
        steps = connection.execute("SELECT SUM(fidelity) FROM evaluations").fetchone()[0]
    assert reported == steps, "every step an evaluation reached was reported to the driver"


def test_the_ray_report_desk_hands_each_question_to_the_driver_once():
    """The driver answers without waiting for the answer to land, so a poll may come first; a question listed
    again then was answered twice, and the late answer took the slot's next report (seen as a run recording
    fewer reports than its evaluations' steps on a loaded machine). The desk is plain asyncio: no Ray here."""
    import asyncio

    from agent.workers.parallel import _RayReportDesk

    async def scenario() -> None:
        desk = _RayReportDesk()
        first = asyncio.create_task(desk.ask(1, 1.0, 0.5))
        await asyncio.sleep(0)
        ((question, slot, step, value),) = await desk.questions()
        assert (slot, step, value) == (1, 1.0, 0.5)
        assert await desk.questions() == []  # polled again before the answer landed: nothing to answer twice
        await desk.answer(question, False)
        assert await first is False
        second = asyncio.create_task(desk.ask(1, 2.0, 0.4))
        await asyncio.sleep(0)
        ((later, *report),) = await desk.questions()
        assert later != question and report == [1, 2.0, 0.4]
        await desk.answer(later, True)
        assert await second is True

    asyncio.run(scenario())


def test_a_ray_address_nothing_answers_at_is_one_line_in_seconds_and_makes_no_run(tmp_path, capsys):
    """Ray itself waits minutes for a GCS that is not there; no run is made for a search that cannot start."""
    pytest.importorskip("ray", reason="pip install .[distributed]")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    db = tmp_path / "r.db"
    flags = ["--ranker", "random", "--workers", "2", "--backend", "ray", "--ray-address", f"127.0.0.1:{closed}"]
    assert main([*flags, "--db", str(db)]) == 2
    assert f"nothing answers at Ray address '127.0.0.1:{closed}' (Connection refused)" in capsys.readouterr().err
    assert main(["runs", "--db", str(db)]) == 0 and "random" not in capsys.readouterr().out
