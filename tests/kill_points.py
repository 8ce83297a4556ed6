"""Kill a search right after each of its writes, resume it, and compare with an uninterrupted run.

Run as ``python -m tests.kill_points '{"ranker": "local-search", "budget": 4}' FOLDER`` by the tests: every
kill point is a fork of this fresh process (forking pytest's own process, with its threads, is not safe), and
the fork SIGKILLs itself just after the Nth write, to the run store or to LangGraph's checkpointer, so every
window between two writes is hit once. Prints one JSON line: the kill points whose resumed run differs.
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


def main(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    whole = folder / "whole.db"
    search_in_a_fork(whole, config)
    expected = evaluations(whole)
    differing, kill_after = {}, 1
    while True:
        db = folder / f"killed-{kill_after}.db"
        if not search_in_a_fork(db, config, kill_after):
            break  # the run finished before this write: every point was hit
        search_in_a_fork(db, config)
        resumed = evaluations(db)
        if resumed != expected:
            differing[kill_after] = resumed
        for path in folder.glob(f"{db.name}*"):
            path.unlink()
        kill_after += 1
    return {"expected": expected, "kill_points": kill_after - 1, "differing": differing}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]), Path(sys.argv[2]))))
