"""Per-iteration overhead of the search loop with checkpointing on, evaluation time excluded.

What is measured
----------------
Real searches run through ``Search(db).start(SearchConfig(...))``: the LangGraph
loop (encode -> rank -> evaluate -> record) compiled with LangGraph's
``SqliteSaver`` and invoked with ``durability="sync"``, on the run store in the
same SQLite file. The task is ``nas_bench_graph`` (cora), whose evaluation is a
dictionary lookup, so nearly all the time is the loop's own. Each (ranker,
iterations) cell is repeated ``--repeats`` times, every time in a fresh database
file in a temporary folder and with a different seed; the table reports medians.

How evaluation time is excluded
-------------------------------
* The ``on_progress`` callback, called by the ``record`` node at the end of
  every iteration, timestamps iterations. The time from the first callback to
  the last covers iterations 2..N completely (encode, rank, evaluate, record and
  every checkpoint write) and excludes the one-off setup (loading the benchmark
  table, creating the run, compiling the graph) and the final report.
* The evaluation time of those iterations is measured separately: after the run
  the codes it evaluated are read back from the store in order and
  ``evaluator.evaluate(code)`` (the same evaluator object the run used) is timed
  call by call with ``time.perf_counter``. That sum is subtracted.
  ``overhead ms/iter = (t_last - t_first - sum(evaluate time, codes 2..N)) / (N - 1)``.
* As a cross-check the table also shows the evaluation time the loop itself
  recorded (``cost_s`` of each evaluation row: the evaluator tool's timing of
  validation plus ``evaluate``). Validation and the LangChain tool wrapper are
  counted as loop overhead, not as evaluation.
* "last 100" is the same overhead over the last 100 iterations only: every
  node re-reads the run's history from the store, so a step costs more as the
  history grows.
* "end-to-end" is ``(wall time of start() - evaluate time of all N codes) / N``,
  which includes the one-off setup spread over the iterations.

Overhead therefore includes proposing the pool (the ``random`` ranker draws a
pool of 10 random codes per step; ``evolution`` proposes one child), ranking,
the run-store reads and writes, checkpoint pruning and the checkpoint writes.

Database size
-------------
After each run the search is closed and ``PRAGMA wal_checkpoint(TRUNCATE)`` is
run, so the main file holds everything. Growth per evaluation is
``(size - size of a fresh database with the schema) / N``; the marginal growth
between N=100 and N=1000 is ``(size_1000 - size_100) / 900`` (medians).

Usage: ``python benchmarks/loop_overhead.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.driver import Search, SearchConfig  # noqa: E402

RANKERS = ("random", "evolution")
ITERATIONS = (100, 1000)
SIZE_LIMIT_BYTES = 10 * 1024


def checkpointed_size(db_path: Path) -> int:
    """Size of the main database file once the WAL is folded into it and truncated."""
    connection = sqlite3.connect(db_path)
    try:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise RuntimeError(f"wal_checkpoint(TRUNCATE) could not complete on {db_path}")
    finally:
        connection.close()
    return db_path.stat().st_size


def empty_db_size(folder: Path) -> int:
    """A fresh run database with our schema and LangGraph's checkpoint tables, no run."""
    path = folder / "empty.db"
    search = Search(path)
    search.checkpointer.setup()
    search.close()
    return checkpointed_size(path)


def one_run(folder: Path, ranker: str, iterations: int, seed: int) -> dict[str, float]:
    db_path = folder / f"{ranker}-{iterations}-{seed}.db"
    search = Search(db_path)
    stamps: list[float] = []
    config = SearchConfig(task="nas_bench_graph", dataset="cora", ranker=ranker, budget=iterations, seed=seed)
    started = time.perf_counter()
    result = search.start(config, on_progress=lambda progress: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - started
    rows = list(search.store.evaluations(result.run_id))
    search.close()
    if len(rows) != iterations or len(stamps) != iterations:
        raise RuntimeError(f"expected {iterations} evaluations and iterations, got {len(rows)} and {len(stamps)}")

    evaluate_s = []
    for row in rows:  # the same codes, in the same order, on the evaluator the run used
        tick = time.perf_counter()
        result.evaluator.evaluate(row["ncode"])
        evaluate_s.append(time.perf_counter() - tick)
    loop_s = stamps[-1] - stamps[0]  # iterations 2..N
    tail = min(100, iterations - 1)  # the last 100 iterations: how the cost per step grows with history
    tail_s = stamps[-1] - stamps[-1 - tail]
    return {
        "overhead_ms": 1000 * (loop_s - sum(evaluate_s[1:])) / (iterations - 1),
        "tail_ms": 1000 * (tail_s - sum(evaluate_s[-tail:])) / tail,
        "end_to_end_ms": 1000 * (wall - sum(evaluate_s)) / iterations,
        "evaluate_ms": 1000 * sum(evaluate_s) / iterations,
        "cost_s_ms": 1000 * sum(row["cost_s"] for row in rows) / iterations,
        "size": checkpointed_size(db_path),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh-database runs per cell (median reported)")
    args = parser.parse_args()

    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="lmsearcher-overhead-") as tmp:
        folder = Path(tmp)
        empty = empty_db_size(folder)
        for ranker in RANKERS:
            for iterations in ITERATIONS:
                runs = []
                for repeat in range(args.repeats):
                    runs.append(one_run(folder, ranker, iterations, seed=repeat))
                    print(
                        f"  {ranker:9s} N={iterations:4d} repeat {repeat}: {runs[-1]['overhead_ms']:.2f} ms/iter",
                        file=sys.stderr,
                    )
                results[ranker, iterations] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
                results[ranker, iterations]["spread"] = max(r["overhead_ms"] for r in runs) - min(
                    r["overhead_ms"] for r in runs
                )

    print(f"\nLoop overhead, nas_bench_graph/cora, SqliteSaver durability=sync, median of {args.repeats} fresh DBs")
    print(f"({platform.python_implementation()} {platform.python_version()}, sqlite {sqlite3.sqlite_version})\n")
    print(
        "| ranker | evaluations | overhead ms/iter (min-max spread) | last 100 iters ms/iter | end-to-end ms/iter | "
        "evaluate() ms/iter | in-loop cost_s ms/iter | DB bytes | bytes/evaluation |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (ranker, iterations), r in results.items():
        per_eval = (r["size"] - empty) / iterations
        print(
            f"| {ranker} | {iterations} | {r['overhead_ms']:.2f} ({r['spread']:.2f}) | {r['tail_ms']:.2f} | "
            f"{r['end_to_end_ms']:.2f} | "
            f"{r['evaluate_ms']:.3f} | {r['cost_s_ms']:.3f} | {int(r['size']):,} | {per_eval:,.0f} |"
        )
    print(f"\nEmpty database (schema + checkpoint tables): {empty:,} bytes.\n")
    print("| ranker | bytes/evaluation at 100 | at 1000 | marginal 100->1000 | <= 10 KB/evaluation |")
    print("|---|---|---|---|---|")
    for ranker in RANKERS:
        small, large = results[ranker, 100]["size"], results[ranker, 1000]["size"]
        marginal = (large - small) / 900
        per_small, per_large = (small - empty) / 100, (large - empty) / 1000
        ok = max(per_small, per_large, marginal) <= SIZE_LIMIT_BYTES
        print(f"| {ranker} | {per_small:,.0f} | {per_large:,.0f} | {marginal:,.0f} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
