"""Multi-fidelity search through our loop on real learning curves, beside the peers of curve_peers.py.

    python benchmarks/fidelity.py [--methods NAME,...] [--seeds 0-9]            # runs, one JSON per method
    python benchmarks/fidelity.py --compare                                     # the tables of BENCHMARKS.md §9

The table is benchmarks/data/digits_mlp (made by make_curves.py: 243 MLPs really trained 27 epochs on
scikit-learn's digits, validation accuracy after every epoch). Each run is a real search (``Search.start``,
the run database, the ranker, the scheduler) of ``--task table`` with the ``val_acc`` curves, so an
evaluation reports epoch by epoch and the scheduler may stop it. One evaluation at a time, as the peers.

Methods (``--methods``):

* ``ours-full``: the default ranker (LM-Searcher-tiny, in-process), no scheduler, 100 evaluations of 27 epochs:
  the full-fidelity search whose final quality the others must reach.
* ``ours-asha``: the default ranker with ``--scheduler asha`` (rungs 1, 3, 9 of 27), ``--stopped-as last``;
  ``ours-asha-worst`` and ``ours-asha-omit``: what the ranker reads of a stopped evaluation, the other two rules.
* ``ours-asha-g3``: the default ranker with ASHA from epoch 3 (``--min-fidelity 3``: rungs 3, 9).
* ``ours-hyperband``: the default ranker with ``--scheduler hyperband``.
* ``random-asha``: random search with our ASHA (Syne Tune's ASHA in our loop, as a check of the scheduler).
* ``ours-asha-g3-rf2``, ``ours-asha-g3-rf4``, ``ours-asha-g3-omit``, ``ours-asha-g9``, ``ours-hyperband-g3``: other
  settings around ``ours-asha-g3`` (reduction factor 2 or 4, stopped evaluations omitted, a first rung at epoch 9,
  Hyperband from epoch 3).

Every multi-fidelity run may spend 2,700 epochs (100 full trainings), which no run needs.

``--compare`` reads these and curve_peers.py's results and prints, per seed paired with ``ours-full``, the
epochs each method needed for its best fully trained configuration to reach ``ours-full``'s final validation
accuracy (the issue's target: a third of 2,700), and the best fully trained configuration of each method at equal
compute (300, 600 and 900 epochs), with paired sign counts against Optuna's TPE + HyperbandPruner and Syne Tune's
ASHA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # curve_peers.py, beside this file
from curve_peers import (  # found on the path set above
    DEFAULT_TABLE,
    MAX_EPOCHS,
    RESULTS,
    CurveTable,
    Trial,
    best_full,
    epochs_to_target,
    parse_seeds,
    summarize_run,
)

from agent.driver import Search, SearchConfig

FULL_EPOCHS = 100 * MAX_EPOCHS  # what ours-full spends: 100 evaluations of 27 epochs
COMPUTE_LEVELS = (300, 600, 900)  # summed epochs at which methods are compared side by side
FULL_COUNTS = (25, 50, 100)  # evaluations of ours-full whose best is a target
PEERS = ("optuna-hyperband", "syne-asha", "optuna-sha", "syne-bohb", "ray-lmsearcher-asha", "ray-random-asha")
# our ranker through Ray Tune (LMSearcherSearch + Ray's ASHA) against Ray's random search under the same ASHA
EXTRA_PAIRS = (("ray-lmsearcher-asha", "ray-random-asha"),)
METHODS: dict[str, dict[str, Any]] = {
    "ours-full": {"ranker": "inprocess", "budget": 100},
    "ours-asha": {"ranker": "inprocess", "scheduler": "asha"},
    "ours-asha-worst": {"ranker": "inprocess", "scheduler": "asha", "stopped_as": "worst"},
    "ours-asha-omit": {"ranker": "inprocess", "scheduler": "asha", "stopped_as": "omit"},
    "ours-asha-g3": {"ranker": "inprocess", "scheduler": "asha", "min_fidelity": 3},
    "ours-hyperband": {"ranker": "inprocess", "scheduler": "hyperband"},
    "random-asha": {"ranker": "random", "scheduler": "asha"},
    # other settings around ours-asha-g3, none closer to the target (BENCHMARKS.md §9)
    "ours-asha-g3-rf2": {"ranker": "inprocess", "scheduler": "asha", "min_fidelity": 3, "reduction_factor": 2},
    "ours-asha-g3-rf4": {"ranker": "inprocess", "scheduler": "asha", "min_fidelity": 3, "reduction_factor": 4},
    "ours-asha-g3-omit": {"ranker": "inprocess", "scheduler": "asha", "min_fidelity": 3, "stopped_as": "omit"},
    "ours-asha-g9": {"ranker": "inprocess", "scheduler": "asha", "min_fidelity": 9},
    "ours-hyperband-g3": {"ranker": "inprocess", "scheduler": "hyperband", "min_fidelity": 3},
}


def run_seed(table: CurveTable, method: str, seed: int, folder: Path) -> list[Trial]:
    """One search; its evaluations as curve_peers.py records trials (epochs, last value, cumulative epochs)."""
    options = {"budget": len(table.rows), "fidelity_budget": FULL_EPOCHS, "max_fidelity": MAX_EPOCHS}
    options = {**options, **METHODS[method]}
    if "scheduler" not in options:
        options = {key: value for key, value in options.items() if key not in ("fidelity_budget", "max_fidelity")}
    files = {"space": str(table.directory / "space.yaml"), "data": str(table.directory / "curves.json")}
    config = SearchConfig.from_mapping({"task": "table", **files, "metric": "val_acc", "seed": seed, **options})
    search = Search(folder / f"{method}-{seed}.db")
    try:
        result = search.start(config, run_id=f"{method}-{seed}")
        trials, spent = [], 0
        for row in search.store.evaluations(result.run_id):
            epochs = int(row["fidelity"])
            spent += epochs
            trials.append(
                {
                    "ncode": row["ncode"], "epochs": epochs, "last": row["score"], "full": epochs == MAX_EPOCHS,
                    "cum_epochs": spent, "status": row["status"],
                }
            )  # fmt: skip
        return trials
    finally:
        search.close()


def run_method(table: CurveTable, method: str, seeds: list[int]) -> dict[str, Any]:
    runs, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for seed in seeds:
            seed_start = time.perf_counter()
            trials = run_seed(table, method, seed, Path(folder))
            summary = summarize_run(table, trials)
            runs.append({"seed": seed, "wall_s": round(time.perf_counter() - seed_start, 2), "summary": summary,
                         "trials": trials})  # fmt: skip
            print(f"{method} seed {seed}: {summary['epochs']} epochs, best {summary['best_full_val_acc']}", flush=True)
    return {
        "method": method, "description": json.dumps(METHODS[method]), "library": "lm-searcher (this repository)",
        "table": str(table.directory.relative_to(Path.cwd()) if table.directory.is_relative_to(Path.cwd())
                     else table.directory),
        "max_epochs": MAX_EPOCHS, "trials_per_seed": None, "seeds": seeds,
        "wall_s": round(time.perf_counter() - start, 2), "runs": runs,
    }  # fmt: skip


def best_within(trials: list[Trial], compute: int) -> float | None:
    """The best fully trained val_acc among the trials finished within ``compute`` summed epochs."""
    best = best_full([trial for trial in trials if trial["cum_epochs"] <= compute])
    return best["last"] if best else None


def sign_counts(ours: list[float | None], theirs: list[float | None]) -> str:
    """'better/level/worse' of seed pairs (None: nothing fully trained yet, worse than any number)."""
    pairs = [(-1.0 if a is None else a, -1.0 if b is None else b) for a, b in zip(ours, theirs, strict=True)]
    return f"{sum(a > b for a, b in pairs)}/{sum(a == b for a, b in pairs)}/{sum(a < b for a, b in pairs)}"


def median_epochs(needed: list[int | None]) -> float | None:
    """The median of epochs-to-target, a seed that never reached it counting as worse than any: None when the
    median seed never reached it."""
    ordered = sorted(needed, key=lambda n: (n is None, n or 0))
    middle = ordered[(len(ordered) - 1) // 2 : len(ordered) // 2 + 1]
    return None if None in middle else statistics.mean(n for n in middle if n is not None)


def compare(folder: Path) -> list[str]:
    results = {}
    for path in sorted(folder.glob("*.json")):
        if path.stem.startswith(("fidelity_", "curve_peers_")):
            document = json.loads(path.read_text())
            results[document["method"]] = {run["seed"]: run["trials"] for run in document["runs"]}
    full = results["ours-full"]
    seeds = sorted(full)
    methods = [method for method, runs in results.items() if set(seeds) <= set(runs)]
    lines = []
    for count in FULL_COUNTS:
        targets = {seed: best_full(full[seed][:count])["last"] for seed in seeds}
        spent = count * MAX_EPOCHS
        lines += [
            f"target per seed: ours-full's best val_acc after {count} evaluations x 27 epochs ({spent} epochs); "
            f"median {statistics.median(targets.values()):.5f}",
            f"  {'method':<17} {'median epochs to it':>20} {'share':>6} {'seeds reaching it':>18}",
        ]
        for method in methods:
            needed = [epochs_to_target(results[method][seed], targets[seed]) for seed in seeds]
            median = median_epochs(needed)
            shown, share = ("-", "-") if median is None else (f"{median:.0f}", f"{median / spent:.2f}")
            reached = sum(n is not None for n in needed)
            lines.append(f"  {method:<17} {shown:>20} {share:>6} {reached:>15}/{len(seeds)}")
    lines += ["", "best fully trained val_acc within the compute (median over seeds):",
              f"  {'method':<17} " + "  ".join(f"{f'@{c} epochs':>12}" for c in COMPUTE_LEVELS)]  # fmt: skip
    for method in methods:
        cells = []
        for compute in COMPUTE_LEVELS:
            values = [best_within(results[method][seed], compute) for seed in seeds]
            known = [v for v in values if v is not None]
            cells.append(f"{statistics.median(known):.5f}" if len(known) > len(values) / 2 else "-")
        lines.append(f"  {method:<17} " + "  ".join(f"{cell:>12}" for cell in cells))
    lines.append("")
    lines.append("paired by seed at equal compute, better/level/worse of the first against the second (best fully "
                 "trained val_acc within the compute):")  # fmt: skip
    pairs = [
        (ours, peer)
        for ours in ("ours-asha", "ours-hyperband", "ours-full")
        for peer in (*PEERS, "random-asha", *(("ours-asha",) if ours == "ours-full" else ()))
    ]
    for ours, peer in [*pairs, *EXTRA_PAIRS]:
        if ours in results and peer in results:
            cells = []
            for compute in COMPUTE_LEVELS:
                a = [best_within(results[ours][seed], compute) for seed in seeds]
                b = [best_within(results[peer][seed], compute) for seed in seeds]
                cells.append(f"@{compute}: {sign_counts(a, b)}")
            lines.append(f"  {ours} vs {peer}: " + "  ".join(cells))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated: " + ", ".join(METHODS))
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,5")
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON results (read and written)")
    parser.add_argument("--compare", action="store_true", help="print the comparison of the results in --results")
    args = parser.parse_args(argv)
    if args.compare:
        print("\n".join(compare(args.results)))
        return 0
    table = CurveTable(args.table)
    for method in args.methods.split(","):
        if method not in METHODS:
            parser.error(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
        result = run_method(table, method, parse_seeds(args.seeds))
        out = args.results / f"fidelity_{method}.json"
        out.write_text(json.dumps(result, separators=(",", ":")) + "\n")  # 10 seeds x 243 trials: kept small
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
