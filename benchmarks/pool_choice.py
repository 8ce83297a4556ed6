"""Which candidate pool should an LLM ranker get? Measured off NAS-Bench-201, on NAS-Bench-Graph.

    python benchmarks/pool_choice.py [--seeds 10] [--budget 100]

NAS-Bench-201 is the evaluation domain, so the pool an LLM ranker gets by default
must not be chosen on it. This script compares pools on the 9 NAS-Bench-Graph
datasets instead, through the real search loop, with three classical rankers:
``random`` (a ranker that knows nothing; with the evolution pool that is regularized
evolution itself), ``additive`` (a good per-slot reader of the history) and
``nearest`` (what a perfect reader of LM-Searcher-tiny's ``near`` prompts would
pick). It prints the mean best validation score per dataset and, per method, the
mean over datasets of its rank among the methods (1 = best), which does not let
one dataset's scale dominate.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from agent.driver import Search, SearchConfig
from evaluators.nas_bench_graph import NBG_DATASETS

# name -> (ranker, proposer)
METHODS = {
    "random pick, random pool (RS)": ("random", "random"),
    "random pick, mixed pool": ("random", "mixed"),
    "random pick, evolution pool (RE)": ("random", "evolution"),
    "additive, random pool": ("additive", "random"),
    "additive, mixed pool": ("additive", "mixed"),
    "additive, evolution pool": ("additive", "evolution"),
    "nearest, random pool": ("nearest", "random"),
    "nearest, mixed pool": ("nearest", "mixed"),
    "nearest, evolution pool": ("nearest", "evolution"),
}


def best_score(method: str, dataset: str, seed: int, budget: int, db: Path) -> float:
    ranker, proposer = METHODS[method]
    config = SearchConfig(
        task="nas_bench_graph", dataset=dataset, ranker=ranker, proposer=proposer, budget=budget, seed=seed
    )
    search = Search(db)
    try:
        result = search.start(config)
    finally:
        search.close()
    return result.best_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=100)
    args = parser.parse_args()
    means: dict[str, dict[str, float]] = {method: {} for method in METHODS}
    with tempfile.TemporaryDirectory() as folder:
        for dataset in NBG_DATASETS:
            for method in METHODS:
                scores = [
                    best_score(method, dataset, seed, args.budget, Path(folder) / "p.db") for seed in range(args.seeds)
                ]
                means[method][dataset] = statistics.fmean(scores)
            print(f"{dataset} done", flush=True)
    print(f"\nNAS-Bench-Graph, {args.seeds} seeds, {args.budget} queries: mean best validation score\n")
    print("| method | " + " | ".join(NBG_DATASETS) + " | mean rank |")
    print("|---" * (len(NBG_DATASETS) + 2) + "|")
    ranks: dict[str, list[float]] = {method: [] for method in METHODS}
    for dataset in NBG_DATASETS:
        scores = [means[other][dataset] for other in METHODS]
        for method in METHODS:  # ties share the mean of their ranks
            mine = means[method][dataset]
            ranks[method].append(1 + sum(s > mine for s in scores) + (sum(s == mine for s in scores) - 1) / 2)
    for method in METHODS:
        cells = " | ".join(f"{means[method][dataset]:.4f}" for dataset in NBG_DATASETS)
        print(f"| {method} | {cells} | {statistics.fmean(ranks[method]):.1f} |")


if __name__ == "__main__":
    main()
