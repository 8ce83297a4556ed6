"""Which candidate pool should an LLM ranker get? Measured off NAS-Bench-201, on NAS-Bench-Graph.

    python benchmarks/pool_choice.py [--seeds 10] [--budget 100] [--methods NAME ...]

NAS-Bench-201 is the evaluation domain, so the pool an LLM ranker gets by default
must not be chosen on it. This script compares pools on the 9 NAS-Bench-Graph
datasets instead, through the real search loop, with three classical rankers:
``random`` (a ranker that knows nothing; with the evolution pool that is regularized
evolution itself), ``additive`` (a good per-slot reader of the history) and
``nearest`` (what a perfect reader of LM-Searcher-tiny's ``near`` prompts would
pick). The peers a default must beat run alongside: local search, Bayesian
optimisation (GP) and TPE. It prints the mean best validation score per dataset and,
per method, the mean over datasets of its rank among the methods run (1 = best),
which does not let one dataset's scale dominate.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from agent.driver import Search, SearchConfig
from evaluators.nas_bench_graph import NBG_DATASETS

# name -> (ranker, proposer, pool size, share of random codes in a mixed pool)
METHODS = {
    "random pick, random pool (RS)": ("random", "random", 10, 0.5),
    "random pick, mixed pool": ("random", "mixed", 10, 0.5),
    "random pick, evolution pool (RE)": ("random", "evolution", 10, 0.5),
    "local search (LS)": ("local-search", None, 10, 0.5),
    "Bayesian optimisation (GP)": ("gp", None, 10, 0.5),
    "TPE": ("tpe", None, 10, 0.5),
    "additive, random pool": ("additive", "random", 10, 0.5),
    "additive, mixed pool": ("additive", "mixed", 10, 0.5),
    "additive, evolution pool": ("additive", "evolution", 10, 0.5),
    "nearest, random pool": ("nearest", "random", 10, 0.5),
    "nearest, mixed pool": ("nearest", "mixed", 10, 0.5),
    "nearest, evolution pool": ("nearest", "evolution", 10, 0.5),
    "nearest, local-search pool": ("nearest", "local-search", 10, 0.5),
    "nearest, mutation pool": ("nearest", "mutation", 10, 0.5),
    "nearest, mixed pool of 20": ("nearest", "mixed", 20, 0.5),
    "nearest, mixed pool, 30 % random": ("nearest", "mixed", 10, 0.3),
    "nearest, mixed pool, 70 % random": ("nearest", "mixed", 10, 0.7),
}


def best_score(method: str, dataset: str, seed: int, budget: int, db: Path) -> float:
    ranker, proposer, pool, random_fraction = METHODS[method]
    config = SearchConfig(
        task="nas_bench_graph",
        dataset=dataset,
        ranker=ranker,
        proposer=proposer,
        pool_size=pool,
        random_fraction=random_fraction,
        budget=budget,
        seed=seed,
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
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), metavar="NAME")
    args = parser.parse_args()
    methods = args.methods
    means: dict[str, dict[str, float]] = {method: {} for method in methods}
    with tempfile.TemporaryDirectory() as folder:
        for dataset in NBG_DATASETS:
            for method in methods:
                scores = [
                    best_score(method, dataset, seed, args.budget, Path(folder) / "p.db") for seed in range(args.seeds)
                ]
                means[method][dataset] = statistics.fmean(scores)
            print(f"{dataset} done", flush=True)
    print(f"\nNAS-Bench-Graph, {args.seeds} seeds, {args.budget} queries: mean best validation score\n")
    print("| method | " + " | ".join(NBG_DATASETS) + " | mean rank |")
    print("|---" * (len(NBG_DATASETS) + 2) + "|")
    ranks: dict[str, list[float]] = {method: [] for method in methods}
    for dataset in NBG_DATASETS:
        scores = [means[other][dataset] for other in methods]
        for method in methods:  # ties share the mean of their ranks
            mine = means[method][dataset]
            ranks[method].append(1 + sum(s > mine for s in scores) + (sum(s == mine for s in scores) - 1) / 2)
    for method in methods:
        cells = " | ".join(f"{means[method][dataset]:.4f}" for dataset in NBG_DATASETS)
        print(f"| {method} | {cells} | {statistics.fmean(ranks[method]):.1f} |")


if __name__ == "__main__":
    main()
