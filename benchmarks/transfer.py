"""Transfer between datasets of one space: a search warm-started from a run on another dataset, against a cold start.

    python benchmarks/transfer.py [--seeds 0-9] [--jobs 2] [--out FILE]
    python benchmarks/transfer.py --summary benchmarks/results/transfer.json

NAS-Bench-Graph: eight datasets share one space (proteins has its own operations, so no pair includes it). Each
dataset is the target of one source, the next dataset in a fixed rotation (cora <- citeseer <- pubmed <- cs <-
physics <- photo <- computers <- arxiv <- cora). NAS-Bench-201 (outcome only, never a choice): cifar10 as the
source of cifar100 and ImageNet16-120. Every source is a real 100-query run of the default on its dataset (the
cold start of that dataset with the same seed).

Methods, 100 queries each, the same seeds:

* ``cold``: the default (LM-Searcher-tiny), empty history.
* ``transfer``: the default with ``--transfer SOURCE``: the source run's 5 best configurations are evaluated
  first (spending 5 of the 100 queries), then the ranker reads their scores on the target as its first history.
* ``tpe`` / ``tpe-add-trials``: Optuna's TPESampler (seeded), cold, and warm-started as Optuna users do it,
  ``study.add_trials`` with every trial of the same source run (its scores on the source dataset). Optuna may
  ask for a configuration twice; every trial counts as a query (our loop never repeats one).

Reported: the best at 30 queries and at 100, and the queries each method needs to reach the cold start's best at
100 queries (paired by seed; ">100" when it never does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from seeds import parse_seeds

from agent.driver import Search, SearchConfig

RESULTS = Path(__file__).resolve().parent / "results"
NBG_ROTATION = ("cora", "citeseer", "pubmed", "cs", "physics", "photo", "computers", "arxiv")
NB201_PAIRS = (("cifar10", "cifar100"), ("cifar10", "imagenet16-120"))
BUDGET = 100
TRANSFER_TOP = 5
METHODS = ("cold", "transfer", "tpe", "tpe-add-trials")


def pairs() -> list[tuple[str, str, str]]:
    """(task, source dataset, target dataset)."""
    rotation = [("nas_bench_graph", NBG_ROTATION[(i + 1) % len(NBG_ROTATION)], NBG_ROTATION[i])
                for i in range(len(NBG_ROTATION))]  # fmt: skip
    return rotation + [("nb201", source, target) for source, target in NB201_PAIRS]


def run_ours(task: str, dataset: str, seed: int, folder: str, source: str | None) -> list[float | None]:
    """One search through our loop; its scores in the order they were evaluated (known results excluded)."""
    name = f"{'transfer' if source else 'cold'}-{task}-{dataset}-{seed}"
    db = Path(folder) / f"{name}.db"
    mapping = {"task": task, "dataset": dataset, "budget": BUDGET, "seed": seed}
    if source:
        mapping |= {"transfer": [source], "transfer_top": TRANSFER_TOP}
    search = Search(db)
    try:
        result = search.start(SearchConfig.from_mapping(mapping), run_id=name)
        return [row["score"] for row in search.store.evaluations(result.run_id)]
    finally:
        search.close()


def run_tpe(task: str, dataset: str, seed: int, source_db: Path | None) -> list[float | None]:
    """Optuna's TPE on the same evaluator, cold or after ``add_trials`` of the source run's trials."""
    import optuna

    from evaluators.nas_bench_graph import NasBenchGraphEvaluator
    from evaluators.nb201 import NB201Evaluator
    from tools.ncode import from_indices, is_valid, normalize, to_indices

    evaluator = NasBenchGraphEvaluator(dataset) if task == "nas_bench_graph" else NB201Evaluator(dataset)
    space = evaluator.space
    distributions = {slot.name: optuna.distributions.CategoricalDistribution(list(range(len(slot.options))))
                     for slot in space.slots}  # fmt: skip
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    if source_db is not None:
        search = Search(source_db)
        try:
            rows = list(search.store.evaluations(source_db.stem))
        finally:
            search.close()
        study.add_trials([
            optuna.trial.create_trial(
                params=dict(zip(distributions, to_indices(space, row["ncode"]), strict=True)),
                distributions=distributions, value=row["score"],
            )
            for row in rows if row["status"] == "ok"
        ])  # fmt: skip
    scores: list[float | None] = []
    for _ in range(100 * BUDGET):  # a code the space's rule rejects costs nothing to check: asked again, not counted
        if len(scores) == BUDGET:
            break
        trial = study.ask(distributions)
        code = normalize(space, from_indices(trial.params[name] for name in distributions))
        if not is_valid(space, code):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        scores.append(evaluator.evaluate(code).score)
        study.tell(trial, scores[-1])
    return scores


def one_run(job: tuple[str, str, str, str, int, str]) -> dict[str, Any]:
    method, task, source, target, seed, folder = job
    source_db = Path(folder) / f"cold-{task}-{source}-{seed}.db"
    if method == "cold":
        scores = run_ours(task, target, seed, folder, None)
    elif method == "transfer":
        scores = run_ours(task, target, seed, folder, f"{source_db}:{source_db.stem}")
    else:
        scores = run_tpe(task, target, seed, source_db if method == "tpe-add-trials" else None)
    print(f"{task} {source}->{target} {method} seed {seed}: best {max(s for s in scores if s is not None):.4f}",
          flush=True)  # fmt: skip
    return {"task": task, "source": source, "target": target, "method": method, "seed": seed, "scores": scores}


def transfer(seeds: list[int], jobs: int) -> dict[str, Any]:
    """Cold starts first (they are the sources), then every warm start and Optuna's runs."""
    with tempfile.TemporaryDirectory() as folder, ProcessPoolExecutor(jobs) as pool:
        datasets = sorted({(task, d) for task, source, target in pairs() for d in (source, target)})
        cold = [("cold", task, dataset, dataset, seed, folder) for task, dataset in datasets for seed in seeds]
        runs = list(pool.map(one_run, cold))
        warm = [(method, task, source, target, seed, folder) for task, source, target in pairs()
                for method in METHODS[1:] for seed in seeds]  # fmt: skip
        runs += list(pool.map(one_run, warm))
    return {"budget": BUDGET, "transfer_top": TRANSFER_TOP, "runs": runs}


def best_at(scores: list[float | None], queries: int) -> float:
    return max(s for s in scores[:queries] if s is not None)


def queries_to_reach(scores: list[float | None], goal: float) -> int | None:
    return next((i + 1 for i, s in enumerate(scores) if s is not None and s >= goal), None)


def summary(document: dict[str, Any]) -> list[str]:
    """Per pair and method: mean best at 30 and 100, the median paired difference from cold at each, and the median
    queries to reach cold's best at 100 (">100" when most seeds never do). Then NAS-Bench-Graph's eight pairs pooled."""
    runs = document["runs"]
    cold = {(r["task"], r["target"], r["seed"]): r["scores"] for r in runs if r["method"] == "cold"}
    header = f"{'pair':<34}{'method':<16}{'best@30':>9}{'vs cold':>9}{'best@100':>10}{'vs cold':>9}"
    lines = [header + f"{'queries to cold@100':>21}{'reached':>9}"]
    pooled: dict[str, list[tuple[float, float]]] = {method: [] for method in METHODS[1:]}
    for task, source, target in pairs():
        for method in METHODS:
            chosen = [r for r in runs if (r["task"], r["target"], r["method"]) == (task, target, method)
                      and (method == "cold" or r["source"] == source)]  # fmt: skip
            if not chosen:
                continue
            baseline = [cold[task, target, r["seed"]] for r in chosen]
            gains = [(best_at(r["scores"], 30) - best_at(c, 30), best_at(r["scores"], BUDGET) - best_at(c, BUDGET))
                     for r, c in zip(chosen, baseline, strict=True)]  # fmt: skip
            if method != "cold" and task == "nas_bench_graph":
                pooled[method] += gains
            needed = [queries_to_reach(r["scores"], best_at(c, BUDGET)) for r, c in zip(chosen, baseline, strict=True)]
            median = statistics.median([n if n is not None else BUDGET + 1 for n in needed])
            lines.append(
                f"{f'{task} {source}->{target}':<34}{method:<16}"
                f"{statistics.fmean(best_at(r['scores'], 30) for r in chosen):>9.4f}"
                f"{statistics.median(g for g, _ in gains):>+9.4f}"
                f"{statistics.fmean(best_at(r['scores'], BUDGET) for r in chosen):>10.4f}"
                f"{statistics.median(g for _, g in gains):>+9.4f}"
                f"{'>100' if median > BUDGET else f'{median:g}':>21}"
                f"{f'{sum(n is not None for n in needed)}/{len(chosen)}':>9}"
            )
    lines.append("NAS-Bench-Graph, 8 pairs pooled: median paired difference from cold; wins-ties-losses")
    for method, gains in pooled.items():
        if gains:
            cells = []
            for at, column in ((30, 0), (BUDGET, 1)):
                values = [g[column] for g in gains]
                record = f"{sum(v > 0 for v in values)}-{sum(v == 0 for v in values)}-{sum(v < 0 for v in values)}"
                cells.append(f"@{at} {statistics.median(values):+.4f} ({record})")
            lines.append(f"  {method:<16}" + "   ".join(cells))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path, help="print the summary of a results file and stop")
    args = parser.parse_args(argv)
    if args.summary:
        print("\n".join(summary(json.loads(args.summary.read_text()))))
        return 0
    document = transfer(parse_seeds(args.seeds), args.jobs)
    out = args.out or RESULTS / "transfer.json"
    out.write_text(json.dumps(document) + "\n")
    print("\n".join(summary(document)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
