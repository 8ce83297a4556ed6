"""What a decision costs a search: wall time per step of the default task with each ranker, in one run.

    python benchmarks/decision_cost.py [--seeds 0-2] [--budget 100]

NAS-Bench-Graph cora (the default task, whose evaluations are table lookups, so a step is almost all deciding),
100 steps per search, each ranker on the same seeds one after another in this process:

* ``random``: no model (what the loop itself costs: proposing, the store, the LangGraph step);
* ``inprocess``: the default, LM-Searcher-tiny grading a pool of 10 in one pass (``InProcessClient.grade_all``),
  with the committee its card names (each candidate's grade the mean of two models', BENCHMARKS.md §16);
* ``inprocess, one at a time``: the same committee asked one question per candidate, as before grade_all;
* ``inprocess, its own model alone``: the shipped folder's own model without its committee (the default before);
* ``inprocess, mixed pool + TPE``: the default model with TPE's suggestion in its pool (``--proposer mixed-tpe``);
* ``tpe`` and ``gp``: our Optuna-backed baselines.

Reported: median milliseconds per step (the first step, a model's loading, left out) and, for the model, the
milliseconds it adds to a step over ``random``; and whether the two in-process paths evaluated the same codes
in the same order (they must: the same grades, so the same picks).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from seeds import parse_seeds

from agent.driver import Search, SearchConfig
from agent.llm.in_process import InProcessClient
from prompts.card import DEFAULT_LOCAL_MODEL, MODEL_CARD, whole_card

RANKERS = (
    "random", "inprocess", "inprocess, one at a time", "inprocess, its own model alone", "inprocess, mixed pool + TPE",
    "tpe", "gp",
)  # fmt: skip
PROPOSERS = {"inprocess, mixed pool + TPE": "mixed-tpe"}  # the others use their ranker's default pool


def own_model_alone(folder: Path) -> str:
    """A ranker spec of the shipped folder's own model without the committee its card names: a copy of the folder
    without ``members``."""
    alone = folder / "alone"
    shutil.copytree(DEFAULT_LOCAL_MODEL, alone, ignore=shutil.ignore_patterns("members"))
    settings = whole_card(alone)
    settings.pop("members", None)
    (alone / MODEL_CARD).write_text(json.dumps(settings))
    return f"inprocess:{alone}"


def search(ranker: str, seed: int, budget: int, specs: dict[str, str]) -> tuple[list[str], float]:
    """The codes evaluated, and the median seconds per step. ``specs``: a ranker's --ranker, where not its name's
    first word."""
    with tempfile.TemporaryDirectory() as folder:
        store = Search(Path(folder) / "runs.db")
        stamps: list[float] = []
        try:
            config = SearchConfig(
                task="nas_bench_graph",
                ranker=specs.get(ranker, ranker.split(",")[0]),
                proposer=PROPOSERS.get(ranker),
                budget=budget,
                seed=seed,
            )
            result = store.start(config, on_progress=lambda _: stamps.append(time.perf_counter()))
            codes = [row["ncode"] for row in store.store.evaluations(result.run_id)]
        finally:
            store.close()
    return codes, statistics.median(b - a for a, b in itertools.pairwise(stamps[1:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--budget", type=int, default=100)
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    per_step: dict[str, list[float]] = {ranker: [] for ranker in RANKERS}
    same = []
    batched = InProcessClient.grade_all
    folder = tempfile.TemporaryDirectory()
    specs = {"inprocess, its own model alone": own_model_alone(Path(folder.name))}
    for seed in seeds:
        codes = {}
        for ranker in RANKERS:
            InProcessClient.grade_all = None if ranker.endswith("one at a time") else batched  # type: ignore[assignment]
            codes[ranker], seconds = search(ranker, seed, args.budget, specs)
            per_step[ranker].append(seconds)
            print(f"seed {seed} {ranker}: {seconds * 1000:.1f} ms per step", flush=True)
        same.append(codes["inprocess"] == codes["inprocess, one at a time"])
    InProcessClient.grade_all = batched  # type: ignore[method-assign]
    folder.cleanup()
    random_ms = 1000 * statistics.median(per_step["random"])
    print(f"\n| ranker | ms per step (median of {len(seeds)} seeds) | added over random |\n|---|---|---|")
    for ranker in RANKERS:
        ms = 1000 * statistics.median(per_step[ranker])
        print(f"| {ranker} | {ms:.1f} | {'' if ranker == 'random' else f'{ms - random_ms:.1f}'} |")
    print(f"\nthe two in-process paths evaluated the same codes in the same order: {sum(same)} of {len(same)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
