"""Parallel search on Ray: wall-time speed-up with 1, 2, 4, 8 workers, and what asynchrony costs.

Part 1, speed-up. A 64-evaluation asynchronous search (``--mode async``, regularized
evolution) on NAS-Bench-Graph (cora), a table lookup padded to a fixed simulated cost
(0.5 s by default) by the evaluator tool, on a local Ray started by this script,
with 1, 2, 4 and 8 workers (one Ray actor each). Scaled down: real evaluations
train a network for minutes or hours; 0.5 s keeps the whole sweep to about a minute
on the project's 2-core machine while still being 25-100x the loop's own cost per
evaluation (decision, store writes, checkpoints, a Ray call). The table shows the wall
time of ``Search.start`` (actor start-up included) and the evaluations' span (first
evaluation start to last evaluation end, from the store's timestamps: start-up
excluded), the speed-up over 1 worker and its share of linear.

Fractional CPUs: the machine has 2 CPUs, and a Ray actor asks for one CPU by default,
so at most 2 would be scheduled at once. Sleeping evaluations use no CPU, so each
actor asks for ``--worker-cpus`` (0.25) and 8 fit. A real evaluator declares what it
needs (``Evaluator.resources``, e.g. ``{"num_gpus": 1}``) and Ray places it.

Part 2, the cost of asynchrony in search quality. NAS-Bench-201 (cifar10), 100
queries, regularized evolution (P=30, S=10), 10 seeds, with 1 worker (the
synchronous, sequential search) and with 4 and 8 asynchronous workers. The
evaluations take a tiny simulated cost (``--quality-cost``, 0.05 s) so that several
are in flight at once and completion order varies. With N workers each decision is
made with up to N - 1 results still missing (pending codes are left out of the pool
and the history). Reported: mean ± s.e. of the best validation accuracy after 100
queries, and the test accuracy of that architecture.

Usage: ``python benchmarks/parallel_speedup.py`` (``--skip-quality`` or ``--skip-speedup``
for one part; ``--data`` for the NAS-Bench-201 folder). Needs Ray: pip install '.[distributed]'.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.driver import Search, SearchConfig  # noqa: E402


def run(config: SearchConfig, run_id: str) -> tuple[float, list[dict], dict]:
    with tempfile.TemporaryDirectory() as tmp:
        search = Search(Path(tmp) / "run.db")
        try:
            started = time.perf_counter()
            result = search.start(config, run_id=run_id)
            wall = time.perf_counter() - started
            rows = list(search.store.evaluations(run_id))
        finally:
            search.close()
    codes = [row["ncode"] for row in rows]
    if len(codes) != config.budget or len(set(codes)) != len(codes):
        raise RuntimeError(f"{run_id}: {len(codes)} evaluations, {len(set(codes))} unique; expected {config.budget}")
    final = result.evaluator.final_metrics(result.best_ncode) if result.best_ncode else {}
    return wall, rows, final


def speedup(args: argparse.Namespace) -> list[dict]:
    results = []
    for workers in args.workers:
        config = SearchConfig(
            task="nas_bench_graph", ranker="evolution", budget=args.budget, seed=0, mode="async", workers=workers,
            backend="ray", simulated_cost_s=args.cost, worker_resources={"num_cpus": args.worker_cpus},
        )  # fmt: skip
        wall, rows, _ = run(config, f"speedup-{workers}")
        span = max(r["created_at"] for r in rows) - min(r["created_at"] - r["cost_s"] for r in rows)
        results.append({"workers": workers, "wall_s": wall, "span_s": span})
        print(f"  {workers} workers: wall {wall:.1f} s, evaluations span {span:.1f} s", file=sys.stderr)
    base = results[0]
    print(f"\n{args.budget} evaluations of {args.cost} s each (serial ideal {args.budget * args.cost:.0f} s), "
          f"local Ray, {args.worker_cpus} CPU per actor\n")  # fmt: skip
    print("| workers | wall s | speed-up | of linear | evaluations span s | speed-up | of linear |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        n = r["workers"] / base["workers"]
        wall_up, span_up = base["wall_s"] / r["wall_s"], base["span_s"] / r["span_s"]
        print(
            f"| {r['workers']} | {r['wall_s']:.1f} | {wall_up:.2f}x | {wall_up / n:.0%} | {r['span_s']:.1f} | "
            f"{span_up:.2f}x | {span_up / n:.0%} |"
        )
    return results


def quality(args: argparse.Namespace) -> list[dict]:
    results = []
    task_options = {"data": args.data} if args.data else {}
    for workers in args.quality_workers:
        for seed in range(args.seeds):
            config = SearchConfig(
                task="nb201", dataset="cifar10", ranker="evolution", budget=args.queries, seed=seed,
                workers=workers, backend="ray", simulated_cost_s=args.quality_cost, task_options=task_options,
                worker_resources={"num_cpus": args.worker_cpus}, mode="async" if workers > 1 else "sync",
            )  # fmt: skip
            wall, rows, final = run(config, f"quality-{workers}-{seed}")
            best = max((r for r in rows if r["score"] is not None), key=lambda r: r["score"])
            in_order = [r["iteration"] for r in rows]
            results.append({
                "workers": workers, "seed": seed, "best_val": best["score"], "test_acc": final.get("test_acc"),
                "wall_s": wall, "out_of_order": sum(a > b for a, b in itertools.pairwise(in_order)),
            })  # fmt: skip
        print(f"  {workers} workers: {args.seeds} seeds done", file=sys.stderr)
    print(f"\nNAS-Bench-201 cifar10, regularized evolution, {args.queries} queries, {args.seeds} seeds, "
          f"{args.quality_cost} s per evaluation: best validation / its test accuracy (%), mean ± s.e.\n")  # fmt: skip
    print("| workers | mode | best val | test of best | completions out of order | wall s per run |")
    print("|---|---|---|---|---|---|")
    for workers in args.quality_workers:
        group = [r for r in results if r["workers"] == workers]
        cells = []
        for field in ("best_val", "test_acc"):
            values = [r[field] for r in group]
            se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
            cells.append(f"{statistics.fmean(values):.2f} ± {se:.2f}")
        order = statistics.fmean(r["out_of_order"] for r in group)
        wall = statistics.fmean(r["wall_s"] for r in group)
        mode = "async" if workers > 1 else "sync (sequential)"
        print(f"| {workers} | {mode} | {cells[0]} | {cells[1]} | {order:.1f} | {wall:.1f} |")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--budget", type=int, default=64, help="evaluations of the speed-up search")
    parser.add_argument("--cost", type=float, default=0.5, help="simulated seconds per evaluation (speed-up)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--worker-cpus", type=float, default=0.25, help="CPUs each Ray actor asks for")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--queries", type=int, default=100, help="budget of the quality searches")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--quality-workers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--quality-cost", type=float, default=0.05, help="simulated seconds per evaluation (quality)")
    parser.add_argument("--data", help="NAS-Bench-201 folder (default: $LMSEARCHER_DATA or ../shared/data)")
    parser.add_argument("--skip-speedup", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "parallel_speedup.json"))
    args = parser.parse_args()

    import logging

    import ray

    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    out: dict = {"args": vars(args)}
    try:
        if not args.skip_speedup:
            out["speedup"] = speedup(args)
        if not args.skip_quality:
            out["quality"] = quality(args)
    finally:
        ray.shutdown()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
