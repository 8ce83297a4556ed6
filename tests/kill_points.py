"""Kill a search right after each of its writes, resume it, and compare with an uninterrupted run.

Run as ``python -m tests.kill_points '{"ranker": "local-search", "budget": 4}' FOLDER`` by the tests: every
kill point is a fork of this fresh process (forking pytest's own process, with its threads, is not safe), and
the fork SIGKILLs itself just after the Nth write, to the run store or to LangGraph's checkpointer, so every
window between two writes is hit once. Kill points run side by side, one per CPU, each in a database of its
own. Prints one JSON line: the kill points whose resumed run differs.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver

from agent.driver import Search, SearchConfig
from agent.runs.store import RunStore

STORE_WRITES = (
    "add_evaluation", "record_decision", "update_run", "prune_checkpoints",
    "add_pending", "clear_pending", "add_report", "clear_reports",  # the asynchronous loop's, and a scheduler's
)  # fmt: skip
WRITES = [(RunStore, name) for name in STORE_WRITES] + [(SqliteSaver, name) for name in ("put", "put_writes")]
RUN_ID = "r"


def search_in_a_fork(db: Path, config: dict[str, Any], kill_after: int | None = None) -> bool:
    """Start or resume run ``r`` in a fork; True when the fork was killed (it reached write ``kill_after``)."""
    pid = os.fork()
    if pid == 0:
        if kill_after is not None:
            count_writes_then_die(kill_after)
        search = Search(db)
        try:
            run = search.store.get_run(RUN_ID)
            if run is None:
                search.start(SearchConfig(**config), run_id=RUN_ID)
            elif run["status"] != "finished":
                search.resume(RUN_ID)
        except BaseException as error:  # reported by the exit code: the fork must never return
            print(f"search failed: {type(error).__name__}: {error}", file=sys.stderr)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1:
        raise RuntimeError("the search failed (see stderr)")
    return os.WIFSIGNALED(status)


def count_writes_then_die(kill_after: int) -> None:
    written = [0]
    for owner, name in WRITES:
        original = getattr(owner, name)

        def counted(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            result = _original(self, *args, **kwargs)
            written[0] += 1
            if written[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(owner, name, counted)


def evaluations(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as connection:
        query = "SELECT iteration, ncode FROM evaluations WHERE run_id = ? ORDER BY id"
        return [tuple(row) for row in connection.execute(query, [RUN_ID])]


def kill_and_resume(config: dict[str, Any], folder: Path, kill_after: int) -> list[tuple[int, str]] | None:
    """The evaluations of a run killed after write ``kill_after`` and resumed; None when it finished before."""
    db = folder / f"killed-{kill_after}.db"
    try:
        if not search_in_a_fork(db, config, kill_after):
            return None
        search_in_a_fork(db, config)
        return evaluations(db)
    finally:
        for path in folder.glob(f"{db.name}*"):
            path.unlink()


def in_a_fork(config: dict[str, Any], folder: Path, kill_after: int) -> int:
    """Start :func:`kill_and_resume` in a fork of its own, which writes its answer to ``result-N.json``."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            answer = kill_and_resume(config, folder, kill_after)
            (folder / f"result-{kill_after}.json").write_text(json.dumps(answer))
            code = 0
        except BaseException as error:
            print(f"kill point {kill_after}: {type(error).__name__}: {error}", file=sys.stderr)
        os._exit(code)
    return pid


def main(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Every kill point, as many at once as there are CPUs (each its own database), until one finishes first."""
    whole = folder / "whole.db"
    search_in_a_fork(whole, config)
    expected = evaluations(whole)
    running: dict[int, int] = {}  # pid -> kill point
    answers: dict[int, list[tuple[int, str]] | None] = {}
    next_point, last_point = 1, None  # last_point: the first write the run finished before
    while running or last_point is None:
        while last_point is None and len(running) < (os.cpu_count() or 1):
            running[in_a_fork(config, folder, next_point)] = next_point
            next_point += 1
        pid, status = os.wait()
        point = running.pop(pid)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            raise RuntimeError(f"kill point {point} failed (see stderr)")
        answer = json.loads((folder / f"result-{point}.json").read_text())
        answers[point] = None if answer is None else [tuple(row) for row in answer]
        if answer is None:
            last_point = point if last_point is None else min(last_point, point)
    points = range(1, last_point)
    differing = {point: answers[point] for point in points if answers[point] != expected}
    return {"expected": expected, "kill_points": len(points), "differing": differing}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]), Path(sys.argv[2]))))
