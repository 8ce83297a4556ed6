"""Random search, regularized evolution and TPE on NAS-Bench-201, through the real search loop.

Every run is a real ``Search(db).start(SearchConfig(...))`` on task ``nb201``
(LangGraph loop, SqliteSaver checkpoints, run store), each in its own
temporary database file:

* RS  -- ``ranker="random"``, ``proposer="random"``, pool 10: a uniform pick from
  a pool of 10 uniform unseen codes is a uniform unseen code, i.e. random search.
* RE  -- ``ranker="evolution"``, population 30, sample (tournament) size 10.
* TPE -- ``ranker="tpe"`` (Optuna's TPESampler, 10 random start-up trials).

Seeds are 0..N-1 (``--first-seed`` shifts them). The searcher sees validation accuracy only. From each run's
evaluations (``store.evaluations(run_id)``, in order) we take the best
validation accuracy within the first 50, 100 and 200 queries and the test
accuracy (``evaluator.final_metrics(code)["test_acc"]``) of that architecture,
and report the mean and standard error over seeds. RS and RE are compared with
the reference table of ``shared/data/README.md`` (200 seeds): the difference is
called within noise when ``|diff| <= 2 * sd * sqrt(1/n + 1/200)``, with ``sd`` our
standard deviation over ``n`` seeds (the reference's spread is not published, so
ours stands in for it).

Methodology note: NAS-Bench-201's rule marks the 341 of 15,625 cells with no
path from input to output invalid (their accuracy is chance level), so these
searches never query them; a reference that sampled from all 15,625 cells
could only do slightly worse, so this can only make our RS look slightly better.

The three datasets are searched with the same seeds, and a seed fixes the
random draws: RS queries the very same 200 cells on all three datasets (and RE
starts from the same 30). Their rows are therefore correlated, not three
independent checks; a handful of unlucky seeds shows up on every dataset.

Usage::

    python benchmarks/nb201_baselines.py --seeds 20 --budget 200 --data /work/shared/data/nb201
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.driver import Search, SearchConfig  # noqa: E402

DATASETS = ("cifar10", "cifar100", "imagenet16-120")
METHODS = {
    "RS": {"ranker": "random", "proposer": "random", "pool_size": 10},
    "RE": {"ranker": "evolution", "population": 30, "sample_size": 10},
    "TPE": {"ranker": "tpe"},
}
QUERIES = (50, 100, 200)
REFERENCE_SEEDS = 200
# shared/data/README.md: mean best validation / test accuracy of that architecture, 200 seeds, unique queries.
REFERENCE = {
    ("RS", "cifar10"): {50: (90.84, 93.63), 100: (91.06, 93.79), 200: (91.19, 93.90)},
    ("RS", "cifar100"): {50: (71.01, 71.01), 100: (71.51, 71.51), 200: (71.92, 71.84)},
    ("RS", "imagenet16-120"): {50: (44.95, 45.08), 100: (45.44, 45.50), 200: (45.78, 45.80)},
    ("RE", "cifar10"): {50: (91.16, 93.91), 100: (91.51, 94.20), 200: (91.58, 94.29)},
    ("RE", "cifar100"): {50: (71.97, 71.94), 100: (73.12, 73.05), 200: (73.45, 73.43)},
    ("RE", "imagenet16-120"): {50: (45.74, 45.75), 100: (46.42, 46.35), 200: (46.60, 46.41)},
}


def run_one(job: dict) -> dict:
    """One search in a fresh temporary database; returns its per-seed summary."""
    method, dataset, seed, budget, data = job["method"], job["dataset"], job["seed"], job["budget"], job["data"]
    config = SearchConfig(
        task="nb201", dataset=dataset, budget=budget, seed=seed, task_options={"data": data}, **METHODS[method]
    )
    with tempfile.TemporaryDirectory(prefix="lmsearcher-nb201-") as tmp:
        search = Search(Path(tmp) / "run.db")
        started = time.perf_counter()
        result = search.start(config, run_id=f"{method}-{dataset}-{seed}")
        wall = time.perf_counter() - started
        rows = list(search.store.evaluations(result.run_id))
        search.close()
    codes = [row["ncode"] for row in rows]
    if len(set(codes)) != len(codes):
        raise RuntimeError(f"{method} {dataset} seed {seed}: a code was queried twice")
    failed = sum(row["score"] is None for row in rows)
    summary = {"method": method, "dataset": dataset, "seed": seed, "evaluations": len(rows), "failed": failed}
    summary["wall_s"] = round(wall, 3)
    for queries in checkpoints(budget):
        first = [row for row in rows[:queries] if row["score"] is not None]
        best = max(first, key=lambda row: row["score"])  # the earliest of equal scores
        summary[str(queries)] = {
            "best_val": best["score"],
            "test_acc": result.evaluator.final_metrics(best["ncode"])["test_acc"],
            "ncode": best["ncode"],
        }
    return summary


def checkpoints(budget: int) -> list[int]:
    return sorted({q for q in QUERIES if q <= budget} | {budget})


def mean_se(values: list[float]) -> tuple[float, float, float]:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    return mean, sd / math.sqrt(len(values)), sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST_SEED .. FIRST_SEED+SEEDS-1")
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument(
        "--data", default=None, help="NAS-Bench-201 folder (default: $LMSEARCHER_DATA or ../shared/data)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (at most 2 on a shared 2-core machine)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "nb201_baselines.json"))
    args = parser.parse_args()

    jobs = [
        {"method": m, "dataset": d, "seed": s, "budget": args.budget, "data": args.data}
        for m in args.methods
        for d in args.datasets
        for s in range(args.first_seed, args.first_seed + args.seeds)
    ]
    started = time.perf_counter()
    runs: list[dict] = []
    with multiprocessing.get_context("spawn").Pool(max(1, args.jobs)) as pool:
        for done, summary in enumerate(pool.imap_unordered(run_one, jobs), start=1):
            runs.append(summary)
            if done % 10 == 0 or done == len(jobs):
                print(f"  {done}/{len(jobs)} runs, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    total_s = time.perf_counter() - started
    runs.sort(key=lambda r: (list(METHODS).index(r["method"]), DATASETS.index(r["dataset"]), r["seed"]))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "seeds": args.seeds, "first_seed": args.first_seed, "budget": args.budget, "jobs": args.jobs,
        "total_wall_s": round(total_s, 1), "methods": {m: METHODS[m] for m in args.methods}, "datasets": args.datasets,
    }  # fmt: skip
    lines = ",\n".join(json.dumps(run) for run in runs)  # one run per line: small and diff-friendly
    out.write_text(f'{{"meta": {json.dumps(meta)},\n"runs": [\n{lines}\n]}}\n')

    report(runs, args, total_s, out)


def report(runs: list[dict], args: argparse.Namespace, total_s: float, out: Path) -> None:
    by_key: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        by_key.setdefault((run["method"], run["dataset"]), []).append(run)
    queries = checkpoints(args.budget)

    print(f"\nNAS-Bench-201, {args.seeds} seeds, budget {args.budget}: mean ± s.e. of the best validation accuracy")
    print("found within the first Q queries / test accuracy of that architecture (%)\n")
    print("| method | dataset | " + " | ".join(f"Q={q} val" + f" | Q={q} test" for q in queries) + " |")
    print("|---|---|" + "---|---|" * len(queries))
    for (method, dataset), group in by_key.items():
        cells = []
        for q in queries:
            for field in ("best_val", "test_acc"):
                mean, se, _ = mean_se([run[str(q)][field] for run in group])
                cells.append(f"{mean:.2f} ± {se:.2f}")
        print(f"| {method} | {dataset} | " + " | ".join(cells) + " |")

    print(f"\nComparison with the reference ({REFERENCE_SEEDS} seeds, shared/data/README.md): diff = ours - reference,")
    print(f"z = diff / (sd * sqrt(1/{args.seeds} + 1/{REFERENCE_SEEDS})); within noise when |z| <= 2\n")
    print(
        "| method | dataset | Q | val ours | val ref | val diff (z) | test ours | test ref | test diff (z) | within |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    outside = []
    for (method, dataset), group in by_key.items():
        reference = REFERENCE.get((method, dataset))
        if reference is None:
            continue
        for q in queries:
            if q not in reference:
                continue
            cells, ok = [], True
            for field, ref in zip(("best_val", "test_acc"), reference[q], strict=True):
                mean, _, sd = mean_se([run[str(q)][field] for run in group])
                se_diff = sd * math.sqrt(1 / len(group) + 1 / REFERENCE_SEEDS)
                z = (mean - ref) / se_diff if se_diff > 0 else math.inf * (mean - ref)
                ok = ok and abs(z) <= 2
                cells.append(f"{mean:.2f} | {ref:.2f} | {mean - ref:+.2f} ({z:+.1f})")
            if not ok:
                outside.append(f"{method} {dataset} Q={q}")
            print(f"| {method} | {dataset} | {q} | " + " | ".join(cells) + f" | {'yes' if ok else 'NO'} |")

    print("\nRun time (wall, per run, mean): " + ", ".join(
        f"{method} {statistics.fmean(r['wall_s'] for r in runs if r['method'] == method):.2f} s"
        for method in dict.fromkeys(r["method"] for r in runs)
    ) + f"; total {total_s:.0f} s with {args.jobs} processes.")  # fmt: skip
    failed = sum(r["failed"] for r in runs)
    print(f"Failed evaluations: {failed}. Every run made {args.budget} unique queries.")
    print(
        "Methodology: NAS-Bench-201's rule marks the 341 of 15,625 cells with no input-to-output path invalid "
        "(chance accuracy), so these searches never query them; the reference may have sampled them, which can "
        "only make our RS look slightly better (about 2.2% of uniform queries would be wasted there)."
    )
    print(
        "Seeds are shared across datasets and a seed fixes the random draws (RS queries the same cells on all three "
        "datasets), so the dataset rows are correlated, not independent checks."
    )
    if outside:
        print("Outside ~2 s.e. of the reference: " + "; ".join(outside))
    print(f"Raw per-seed results: {out}")


if __name__ == "__main__":
    main()
