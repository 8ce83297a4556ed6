"""Which candidate pool should an LLM ranker get? Measured off NAS-Bench-201, on NAS-Bench-Graph.

    python benchmarks/pool_choice.py [--seeds 10] [--budget 100] [--methods NAME ...] [--model PATH]
                                     [--domain nas-bench-graph|channel-bench-macro] [--out FILE.json]

NAS-Bench-201 is the evaluation domain, so the pool an LLM ranker gets by default
must not be chosen on it. This script compares pools on the 9 NAS-Bench-Graph
datasets instead, through the real search loop, with three classical rankers:
``random`` (a ranker that knows nothing; with the evolution pool that is regularized
evolution itself), ``additive`` (a good per-slot reader of the history) and
``nearest`` (what a perfect reader of LM-Searcher-tiny's ``near`` prompts would
pick; ``nearest-mean`` keeps its grades fractional, as the default's expected
grades are). The default itself (LM-Searcher-tiny scored in-process, or ``--model``)
and the peers a default must beat run alongside: local search, Bayesian
optimisation (GP) and TPE. It prints the mean best validation score per dataset and,
per method, the mean over datasets of its rank among the methods run (1 = best),
which does not let one dataset's scale dominate. ``--out`` also writes every run's best score, which
``benchmarks/paired_seeds.py`` compares seed by seed.

``--domain channel-bench-macro`` runs the same methods on a training domain instead: Channel-Bench-Macro
(16,384 ResNets, 7 slots of 4 widths, mean accuracy of 3 seeds) from ``../shared/data/train_domains``,
searched as a user's results table (``--task table``). Its optimum is harder to find than NAS-Bench-Graph's
differences are to see, so it separates methods that NAS-Bench-Graph's 10 seeds call level.

The ``perfect pick`` rows are a measurement, not a method: their ranker reads each candidate's true score
from the table, so they say what a perfect ranker of a pool would reach, and whether the pool or the
ranker limits a search. The ``GP posterior mean`` and ``GP upper confidence bound`` rows read the whole
history with a Gaussian process, where the ``near`` prompt shows the 24 nearest codes. The
``LM-Searcher-tiny + GP UCB`` rows average the two readings' ranks within the pool: does the model add
anything to a reader of the whole history?
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from agent.driver import Search, SearchConfig
from agent.llm.ranker import Calls, LLMRanker, answer_grade, make_llm_ranker
from agent.strategies.proposers import code_matrix
from agent.strategies.rankers import Decision, RandomRanker, Ranker, RankRequest, SurrogateRanker, pick_highest
from agent.strategies.user_rankers import object_spec
from evaluators.data_path import find_file
from evaluators.nas_bench_graph import NBG_DATASETS
from evaluators.registry import make_evaluator
from tools.evaluator import Evaluator


class Method(NamedTuple):
    ranker: str
    proposer: str | None = None
    pool: int = 10
    random_fraction: float = 0.5  # of a mixed pool
    history_cap: int | None = None  # of a nearest reader (default 24)
    gp_every: int = 2  # of a portfolio


METHODS = {
    "LM-Searcher-tiny, mixed pool (the default)": Method("inprocess", "mixed"),
    "LM-Searcher-tiny, portfolio (GP every 2nd step)": Method("inprocess", "portfolio"),
    "LM-Searcher-tiny, mixed pool of 20": Method("inprocess", "mixed", pool=20),
    "random pick, random pool (RS)": Method("random", "random"),
    "random pick, mixed pool": Method("random", "mixed"),
    "random pick, evolution pool (RE)": Method("random", "evolution"),
    "local search (LS)": Method("local-search"),
    "Bayesian optimisation (GP)": Method("gp"),
    "TPE": Method("tpe"),
    "additive, random pool": Method("additive", "random"),
    "additive, mixed pool": Method("additive", "mixed"),
    "additive, evolution pool": Method("additive", "evolution"),
    "nearest, random pool": Method("nearest", "random"),
    "nearest, mixed pool": Method("nearest", "mixed"),
    "nearest, evolution pool": Method("nearest", "evolution"),
    "nearest, local-search pool": Method("nearest", "local-search"),
    "nearest, mutation pool": Method("nearest", "mutation"),
    "nearest, mixed pool of 20": Method("nearest", "mixed", pool=20),
    "nearest, mixed pool, 30 % random": Method("nearest", "mixed", random_fraction=0.3),
    "nearest, mixed pool, 70 % random": Method("nearest", "mixed", random_fraction=0.7),
    "nearest, 48 nearest codes, mixed pool": Method("nearest", "mixed", history_cap=48),
    "nearest-mean (fractional grades), mixed pool": Method("nearest-mean", "mixed"),
    "nearest-mean, mixed pool + GP": Method("nearest-mean", "mixed-gp"),
    "LM-Searcher-tiny, mixed pool + GP": Method("inprocess", "mixed-gp"),
    "LM-Searcher-tiny, mixed pool + TPE": Method("inprocess", "mixed-tpe"),
    "LM-Searcher-tiny, portfolio (GP every 3rd step)": Method("inprocess", "portfolio", gp_every=3),
    "nearest-mean, portfolio (GP every 2nd step)": Method("nearest-mean", "portfolio"),
    "LM-Searcher-tiny, mixed pool, 30 % random": Method("inprocess", "mixed", random_fraction=0.3),
    "LM-Searcher-tiny, mixed pool, 70 % random": Method("inprocess", "mixed", random_fraction=0.7),
    "perfect pick, mixed pool": Method("perfect", "mixed"),
    "perfect pick, mixed pool of 20": Method("perfect", "mixed", pool=20),
    "perfect pick, evolution pool": Method("perfect", "evolution"),
    "GP posterior mean, mixed pool": Method("gp-mean", "mixed"),
    "GP upper confidence bound, mixed pool": Method("gp-ucb", "mixed"),
    "LM-Searcher-tiny + GP UCB (1/2 each), mixed pool": Method("blend-half", "mixed"),
    "LM-Searcher-tiny + GP UCB (1/3 GP), mixed pool": Method("blend-third", "mixed"),
}


class PerfectRanker(SurrogateRanker):
    """Ranks by the candidates' true scores, looked up in the benchmark's table: the ceiling of a pool."""

    name = "perfect"

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def predictions(self, scored: Sequence[tuple[str, float]], pool: Sequence[str]) -> Sequence[float]:
        scores = [self.evaluator.evaluate(code).score for code in pool]
        return [-math.inf if score is None else self.evaluator.metric.utility(score) for score in scores]


class KernelRanker(SurrogateRanker):
    """A classical reader of the whole history, not of the 24 nearest codes: a Gaussian process with an
    exponential kernel on the share of differing slots, its length scale and noise chosen by marginal
    likelihood over a grid. Ranks by the posterior mean plus ``beta`` standard deviations."""

    name = "kernel"

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def predictions(self, scored: Sequence[tuple[str, float]], pool: Sequence[str]) -> Sequence[float]:
        history = code_matrix([code for code, _ in scored])
        utilities = np.array([utility for _, utility in scored])
        targets = (utilities - utilities.mean()) / (utilities.std() + 1e-12)
        distances = (history[:, None, :] != history[None, :, :]).mean(axis=-1)
        best: tuple[float, float, np.ndarray, np.ndarray] | None = None
        for length in (0.05, 0.1, 0.2, 0.4, 0.8, 1.6):
            for noise in (1e-3, 1e-2, 1e-1):
                try:
                    factor = np.linalg.cholesky(np.exp(-distances / length) + noise * np.eye(len(targets)))
                except np.linalg.LinAlgError:
                    continue
                weights = np.linalg.solve(factor.T, np.linalg.solve(factor, targets))
                likelihood = -0.5 * targets @ weights - np.log(np.diag(factor)).sum()
                if best is None or likelihood > best[0]:
                    best = (likelihood, length, factor, weights)
        assert best is not None, "the largest noise keeps the kernel matrix positive definite"
        _, length, factor, weights = best
        cross = np.exp(-(code_matrix(pool)[:, None, :] != history[None, :, :]).mean(axis=-1) / length)
        variance = np.clip(1.0 - (np.linalg.solve(factor, cross.T) ** 2).sum(axis=0), 0.0, None)
        return list(cross @ weights + self.beta * np.sqrt(variance))


def within_pool_ranks(values: Sequence[float]) -> np.ndarray:
    """1 for the lowest value, ``len(values)`` for the highest; ties share the mean of their ranks."""
    array = np.asarray(values, dtype=float)
    return np.array([(array < value).sum() + ((array == value).sum() + 1) / 2 for value in array])


class BlendRanker(Ranker):
    """LM-Searcher-tiny's expected grades and a GP's upper confidence bound, each turned into ranks within
    the pool and averaged, ``gp_weight`` on the GP's: does the model add to a reader of the whole history?"""

    name = "blend"

    def __init__(self, model: LLMRanker, gp_weight: float) -> None:
        self.model = model
        self.kernel = KernelRanker(beta=1.0)
        self.gp_weight = gp_weight

    def close(self) -> None:
        self.model.close()

    def rank(self, request: RankRequest) -> Decision:
        history = [(o.ncode, o.score) for o in request.history if o.score is not None]
        if len(history) < 2:  # the model's grades need a scale, as LLMRanker's do
            return RandomRanker().rank(request)
        pool = list(request.pool)
        decision = Decision(chosen=[], pool=pool, prompt_tokens=0, completion_tokens=0, latency_s=0.0)
        answers = self.model._ask(request, history, pool, decision, Calls())
        grades = [-math.inf if (grade := answer_grade(answer)) is None else grade for answer in answers]
        scored = [(code, request.metric.utility(score)) for code, score in history]
        blended = (1 - self.gp_weight) * within_pool_ranks(grades) + self.gp_weight * within_pool_ranks(
            self.kernel.predictions(scored, pool)
        )
        picked = pick_highest(request, list(blended))
        decision.chosen = picked.chosen
        return decision


def blend_ranker(model: str, gp_weight: float) -> BlendRanker:
    return BlendRanker(make_llm_ranker(model, {}), gp_weight)


# rankers that only this script builds, given to the search as objects; each gets the run's config and the
# LM-Searcher-tiny it may ask ("inprocess" or "inprocess:PATH")
SCRIPT_RANKERS: dict[str, Callable[[SearchConfig, str], Ranker]] = {
    "perfect": lambda config, model: PerfectRanker(make_evaluator(config.task, config.task_options())),
    "gp-mean": lambda config, model: KernelRanker(beta=0.0),
    "gp-ucb": lambda config, model: KernelRanker(beta=1.0),
    "blend-half": lambda config, model: blend_ranker(model, 1 / 2),
    "blend-third": lambda config, model: blend_ranker(model, 1 / 3),
}


CHANNEL_BENCH = "channel-bench-macro"


def channel_bench_task(folder: Path) -> dict[str, str]:
    """Channel-Bench-Macro as a results table: its keys write widths 1-4, an NCode writes option indices 0-3."""
    source = find_file("channel_bench_macro_resnet.json", "train_domains", None, "the Channel-Bench-Macro repository")
    rows = json.loads(source.read_text())
    table = {"".join(str(int(digit) - 1) for digit in key): {"acc": row["mean"]} for key, row in rows.items()}
    (folder / "cbm.json").write_text(json.dumps(table))
    (folder / "cbm.yaml").write_text("name: cbm\nrule: none\nslots:\n  - {name: c, options: [1, 2, 3, 4], repeat: 7}\n")
    return {"task": "table", "space": str(folder / "cbm.yaml"), "data": str(folder / "cbm.json"), "metric": "acc"}


def best_score(method: str, task: dict[str, str], seed: int, budget: int, db: Path, model: str | None = None) -> float:
    chosen = METHODS[method]
    ranker = chosen.ranker
    if model and ranker == "inprocess":
        ranker = f"inprocess:{model}"
    config = SearchConfig(
        **task,
        ranker=ranker,
        proposer=chosen.proposer,
        pool_size=chosen.pool,
        random_fraction=chosen.random_fraction,
        history_cap=chosen.history_cap,
        gp_every=chosen.gp_every,
        budget=budget,
        seed=seed,
    )
    llm = f"inprocess:{model}" if model else "inprocess"
    scripted = SCRIPT_RANKERS[ranker](config, llm) if ranker in SCRIPT_RANKERS else None
    if scripted is not None:
        config = config.changed(ranker=object_spec(scripted))
    search = Search(db)
    try:
        result = search.start(config, ranker=scripted)
    finally:
        search.close()
    return result.best_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), metavar="NAME")
    parser.add_argument("--model", help="the model folder LM-Searcher-tiny's row scores (default: the shipped one)")
    parser.add_argument("--domain", choices=["nas-bench-graph", CHANNEL_BENCH], default="nas-bench-graph")
    parser.add_argument("--out", type=Path, help="write each run's best score here (JSON, for paired_seeds.py)")
    args = parser.parse_args()
    if args.out is not None and args.out.exists():
        parser.error(f"{args.out} exists; name a new file")
    methods = args.methods
    with tempfile.TemporaryDirectory() as folder:
        if args.domain == CHANNEL_BENCH:
            datasets, tasks = [CHANNEL_BENCH], {CHANNEL_BENCH: channel_bench_task(Path(folder))}
        else:
            datasets, tasks = NBG_DATASETS, {d: {"task": "nas_bench_graph", "dataset": d} for d in NBG_DATASETS}
        means: dict[str, dict[str, float]] = {method: {} for method in methods}
        runs = []
        for dataset in datasets:
            for method in methods:
                db = Path(folder) / "p.db"
                scores = [
                    best_score(method, tasks[dataset], seed, args.budget, db, args.model) for seed in range(args.seeds)
                ]
                means[method][dataset] = statistics.fmean(scores)
                runs += [{"method": method, "dataset": dataset, "seed": i, "best": b} for i, b in enumerate(scores)]
            print(f"{dataset} done", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps({"domain": args.domain, "budget": args.budget, "runs": runs}, indent=1))
    print(f"\n{args.domain}, {args.seeds} seeds, {args.budget} queries: mean best validation score\n")
    print("| method | " + " | ".join(datasets) + " | mean rank |")
    print("|---" * (len(datasets) + 2) + "|")
    ranks: dict[str, list[float]] = {method: [] for method in methods}
    for dataset in datasets:
        scores = [means[other][dataset] for other in methods]
        for method in methods:  # ties share the mean of their ranks
            mine = means[method][dataset]
            ranks[method].append(1 + sum(s > mine for s in scores) + (sum(s == mine for s in scores) - 1) / 2)
    for method in methods:
        cells = " | ".join(f"{means[method][dataset]:.4f}" for dataset in datasets)
        print(f"| {method} | {cells} | {statistics.fmean(ranks[method]):.1f} |")


if __name__ == "__main__":
    main()
