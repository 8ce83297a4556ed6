"""LMSearcherSampler inside Optuna against the same ranker through our own loop, and Optuna's TPE and GP samplers.

    python benchmarks/optuna_sampler.py [--seeds 0-9] [--jobs 2] [--out FILE]
    python benchmarks/optuna_sampler.py --summary benchmarks/results/optuna_sampler.json

Tables: NAS-Bench-Graph cora and photo, NAS-Bench-201 cifar10 (an outcome: nothing is chosen on it). 100 scored
queries per run, the same seeds:

* ``study``: the default (LM-Searcher-tiny) through our loop (``Search``, as ``python main.py`` runs it).
* ``sampler``: ``LMSearcherSampler()`` (the same ranker and proposer) choosing the trials of an Optuna study.
* ``tpe`` / ``gp``: Optuna's TPESampler and GPSampler, seeded.

Optuna studies ask for each slot as a categorical parameter over its option indices, named so that their order
is the NCode's. A configuration the table's rule rejects (NAS-Bench-Graph's) is told FAIL and not counted;
every other trial is a query, a configuration asked twice included (our loop never asks twice). Reported: the
mean best at 100 queries, the seed-paired comparison of the sampler with the study, and the seconds each method
spends deciding per query (an Optuna ``ask``; for the study, its wall time per evaluation, store writes
included), all measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import optuna
from seeds import parse_seeds

from agent.driver import Search, SearchConfig
from agent.integrations.optuna_sampler import LMSearcherSampler
from evaluators.nas_bench_graph import NasBenchGraphEvaluator
from evaluators.nb201 import NB201Evaluator
from tools.ncode import from_indices, is_valid, normalize

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = (("nas_bench_graph", "cora"), ("nas_bench_graph", "photo"), ("nb201", "cifar10"))
METHODS = ("study", "sampler", "tpe", "gp")
BUDGET = 100


def run_study(task: str, dataset: str, seed: int) -> tuple[list[float | None], float]:
    with tempfile.TemporaryDirectory() as folder:
        search = Search(Path(folder) / "runs.db")
        try:
            started = time.perf_counter()
            config = SearchConfig.from_mapping({"task": task, "dataset": dataset, "budget": BUDGET, "seed": seed})
            result = search.start(config, run_id="study")
            elapsed = time.perf_counter() - started
            scores = [row["score"] for row in search.store.evaluations(result.run_id)]
        finally:
            search.close()
    return scores, elapsed / len(scores)


def run_optuna(method: str, task: str, dataset: str, seed: int) -> tuple[list[float | None], float, int]:
    """Scores in the order asked, seconds per ask, and the asks the table's rule rejected."""
    evaluator = NasBenchGraphEvaluator(dataset) if task == "nas_bench_graph" else NB201Evaluator(dataset)
    space = evaluator.space
    categorical = optuna.distributions.CategoricalDistribution
    distributions = {f"{i:02d}_{slot.name}": categorical(list(range(len(slot.options))))
                     for i, slot in enumerate(space.slots)}  # fmt: skip
    samplers = {
        "sampler": lambda: LMSearcherSampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=samplers[method]())
    scores: list[float | None] = []
    asking, rejected = 0.0, 0
    while len(scores) < BUDGET and rejected < 100 * BUDGET:
        started = time.perf_counter()
        trial = study.ask(distributions)
        asking += time.perf_counter() - started
        code = normalize(space, from_indices(trial.params[name] for name in distributions))
        if not is_valid(space, code):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            rejected += 1
            continue
        scores.append(evaluator.evaluate(code).score)
        study.tell(trial, scores[-1])
    return scores, asking / (len(scores) + rejected), rejected


def one_run(job: tuple[str, str, str, int]) -> dict[str, Any]:
    method, task, dataset, seed = job
    if method == "study":
        scores, seconds = run_study(task, dataset, seed)
        rejected = 0
    else:
        scores, seconds, rejected = run_optuna(method, task, dataset, seed)
    best = max(s for s in scores if s is not None)
    print(f"{task} {dataset} {method} seed {seed}: best {best:.4f}, {seconds * 1000:.0f} ms per query", flush=True)
    return {
        "task": task, "dataset": dataset, "method": method, "seed": seed, "scores": scores,
        "seconds_per_query": seconds, "rejected": rejected,
    }  # fmt: skip


def summary(document: dict[str, Any]) -> list[str]:
    runs = document["runs"]
    best = {
        (r["task"], r["dataset"], r["method"], r["seed"]): max(s for s in r["scores"] if s is not None) for r in runs
    }
    lines = [f"{'table':<24}{'method':<10}{'mean best':>10}{'ms/query':>10}{'rejected':>10}   sampler vs study"]
    for task, dataset in TASKS:
        for method in METHODS:
            chosen = [r for r in runs if (r["task"], r["dataset"], r["method"]) == (task, dataset, method)]
            if not chosen:
                continue
            record = ""
            if method == "sampler":
                pairs = [(best[task, dataset, "sampler", r["seed"]], best.get((task, dataset, "study", r["seed"])))
                         for r in chosen]  # fmt: skip
                pairs = [(a, b) for a, b in pairs if b is not None]
                record = f"better-level-worse {sum(a > b for a, b in pairs)}-{sum(a == b for a, b in pairs)}-" + str(
                    sum(a < b for a, b in pairs)
                )
            lines.append(
                f"{f'{task} {dataset}':<24}{method:<10}"
                f"{statistics.fmean(best[task, dataset, method, r['seed']] for r in chosen):>10.4f}"
                f"{1000 * statistics.median(r['seconds_per_query'] for r in chosen):>10.1f}"
                f"{statistics.fmean(r['rejected'] for r in chosen):>10.1f}   {record}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path, help="print the summary of a results file and stop")
    args = parser.parse_args(argv)
    if args.summary:
        print("\n".join(summary(json.loads(args.summary.read_text()))))
        return 0
    jobs = [(method, task, dataset, seed) for task, dataset in TASKS for method in args.methods.split(",")
            for seed in parse_seeds(args.seeds)]  # fmt: skip
    with ProcessPoolExecutor(args.jobs) as pool:
        document = {"budget": BUDGET, "runs": list(pool.map(one_run, jobs))}
    out = args.out or RESULTS / "optuna_sampler.json"
    out.write_text(json.dumps(document) + "\n")
    print("\n".join(summary(document)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
