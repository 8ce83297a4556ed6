"""Multi-objective search through our loop: the hypervolume of each method's front against the table's true front.

    python benchmarks/pareto.py [--tasks NAME,...] [--methods NAME,...] [--seeds 0-9] [--budget 100] [--out FILE]
    python benchmarks/pareto.py --constrained [--seeds 0-9] [--out FILE]
    python benchmarks/pareto.py --summary FILE [FILE ...] [--methods FIRST,OTHER,...]   # FIRST paired against each

Tables with real second objectives (no objective is made up):

* NAS-Bench-Graph, 9 datasets: validation accuracy (max), latency in seconds (min), parameters in millions (min).
* NAS-Bench-Macro (CIFAR-10) and Channel-Bench-Macro (ResNet), from ../shared/data/train_domains: mean accuracy
  (max), parameters (min), FLOPs (min).

Methods, each a real search (``Search.start``, ``--metric`` three times): ``inprocess`` (the default:
LM-Searcher-tiny reading the default ``auto`` scalarisation), ``nearest-mean`` (its classical reader under the same
scalarisation), ``nsga2`` and ``tpe`` (Optuna's NSGA-II and multi-objective TPE, which read every objective),
and ``random``.

Hypervolume: each objective's utility is scaled to [0, 1] over the whole table (0 the worst value, 1 the best) and
turned into a loss (1 - scaled); the reference point is 1.1 in every objective; the volume is Optuna's
``compute_hypervolume`` (optuna._hypervolume, the implementation its hypervolume-history plot uses). The table's
true front is the Pareto front of all its rows, so a method's ratio is its found front's volume over the best
possible (1.0).

``--constrained``: one objective (accuracy) under a parameter limit at the table's median parameter count (which
excludes the unconstrained optimum on every table here), 100 queries, the best feasible accuracy of the default
against Optuna's TPE and GP, which read the broken constraint as Optuna's constrained samplers do. Every table
knows a code's parameter count before it is evaluated (NAS-Bench-Graph itself; the two tables through
``known_before``), so the loop drops candidates over the limit; a method written ``NAME+blind`` evaluates them
anyway (``evaluate_known_infeasible``), as Optuna's samplers do on their own: the peers run so by default, and
``inprocess+blind`` shows what dropping them buys the default. ``+omit`` shows the ranker an infeasible result
without a score (``infeasible_as="omit"``) instead of as the worst finished score: ``inprocess+blind+omit``
against ``inprocess+blind`` measures that marking. ``+parego`` reads several objectives through ParEGO's
scalarisation alone instead of the default, ``+fronts`` through the non-dominated layers first and ParEGO's value
within them, ``+epsilon`` through a front member's box (``--scalarisation``). ``+known`` tells a table's search its
parameters and FLOPs before evaluating (``--known-before``), as NAS-Bench-Graph always knows its own.
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

import numpy as np
from optuna._hypervolume import compute_hypervolume
from seeds import parse_seeds

from agent.driver import Search, SearchConfig
from evaluators.data_path import find_file
from evaluators.nas_bench_graph import NBG_DATASETS
from tools.objectives import Objective, pareto_indices, parse_objective

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("inprocess", "nearest-mean", "nsga2", "tpe", "random")
TABLES = ("nas-bench-macro", "channel-bench-macro")
NBG_OBJECTIVES = ["val_acc", "latency_s:min", "params_m:min"]
TABLE_OBJECTIVES = ["acc", "params:min", "flops:min"]


def table_task(name: str, folder: Path) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """A training-domain table as ``--task table`` (space file, JSON rows), and its rows' objectives."""
    if name == "nas-bench-macro":
        source = find_file("nas_bench_macro_cifar10.json", "train_domains", None, "NAS-Bench-Macro")
        rows = {code: {"acc": row["mean_acc"], "params": row["params"], "flops": row["flops"]}
                for code, row in json.loads(source.read_text()).items()}  # fmt: skip
        space = "name: nbm\nrule: none\nslots:\n  - {name: op, options: [0, 1, 2], repeat: 8}\n"
    else:  # Channel-Bench-Macro: keys write widths 1-4, an NCode writes option indices 0-3
        source = find_file("channel_bench_macro_resnet.json", "train_domains", None, "Channel-Bench-Macro")
        rows = {"".join(str(int(d) - 1) for d in key): {"acc": row["mean"], "params": row["params"],
                "flops": row["flops"]} for key, row in json.loads(source.read_text()).items()}  # fmt: skip
        space = "name: cbm\nrule: none\nslots:\n  - {name: c, options: [1, 2, 3, 4], repeat: 7}\n"
    (folder / f"{name}.json").write_text(json.dumps(rows))
    (folder / f"{name}.yaml").write_text(space)
    task = {"task": "table", "space": str(folder / f"{name}.yaml"), "data": str(folder / f"{name}.json")}
    return task, list(rows.values())


def nbg_task(dataset: str) -> tuple[dict[str, Any], list[dict[str, float]]]:
    from nas_bench_graph import light_read

    rows = [{"val_acc": row["valid_perf"], "latency_s": row["latency"], "params_m": row["para"]}
            for row in light_read(dataset).values()]  # fmt: skip
    return {"task": "nas_bench_graph", "dataset": dataset}, rows


class Scale:
    """Objectives scaled over a whole table, as losses in [0, 1] (0: the table's best value)."""

    def __init__(self, objectives: list[Objective], rows: list[dict[str, float]]) -> None:
        self.objectives = objectives
        utilities = np.array([[o.utility(row[o.name]) for o in objectives] for row in rows], dtype=float)
        self.low, self.high = utilities.min(axis=0), utilities.max(axis=0)

    def losses(self, values: list[list[float]]) -> np.ndarray:
        utilities = np.array([[o.utility(v) for o, v in zip(self.objectives, point, strict=True)] for point in values])
        return 1.0 - (utilities - self.low) / (self.high - self.low)

    def hypervolume(self, values: list[list[float]]) -> float:
        if not values:
            return 0.0
        losses = self.losses(values)
        front = losses[pareto_indices((-losses).tolist())]
        return float(compute_hypervolume(front, np.full(len(self.objectives), 1.1), assume_pareto=True))


def run_search(task: dict[str, Any], metrics: list[str], method: str, seed: int, budget: int, db: Path,
               constraint: list[str] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    ranker, *flags = method.split("+")
    options = {"evaluate_known_infeasible": "blind" in flags, "infeasible_as": "omit" if "omit" in flags else "worst"}
    options = {"constraint": constraint, **options} if constraint else {}
    for rule in ("fronts", "parego", "epsilon"):
        if rule in flags:
            options["scalarisation"] = rule
    if "known" in flags and task["task"] == "table":  # NAS-Bench-Graph always knows its latency and parameters
        options["known_before"] = [name.partition(":")[0] for name in metrics[1:]]
    config = SearchConfig.from_mapping({**task, "metric": metrics, "ranker": ranker, "budget": budget, "seed": seed,
                                        **options})  # fmt: skip
    search = Search(db)
    try:
        result = search.start(config, run_id=f"{method}-{seed}")
        return list(search.store.evaluations(result.run_id))
    finally:
        search.close()


def pareto(tasks: list[str], methods: list[str], seeds: list[int], budget: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for name in tasks:
            if name in TABLES:
                task, rows = table_task(name, Path(folder))
                metrics = TABLE_OBJECTIVES
            else:
                task, rows = nbg_task(name)
                metrics = NBG_OBJECTIVES
            scale = Scale([parse_objective(m) for m in metrics], rows)
            true_hv = scale.hypervolume([[row[o.name] for o in scale.objectives] for row in rows])
            for method in methods:
                for seed in seeds:
                    started = time.perf_counter()
                    db = Path(folder) / f"{name}-{method}.db"
                    evaluations = run_search(task, metrics, method, seed, budget, db)
                    found = [row["objective_values"] for row in evaluations if row["status"] == "ok"]
                    ratio = scale.hypervolume(found) / true_hv
                    runs.append({"task": name, "method": method, "seed": seed, "hv_ratio": round(ratio, 6),
                                 "wall_s": round(time.perf_counter() - started, 1)})  # fmt: skip
                    print(f"{name} {method} seed {seed}: hypervolume {ratio:.4f} of the true front", flush=True)
    return {"objectives": {"nas_bench_graph": NBG_OBJECTIVES, "tables": TABLE_OBJECTIVES}, "budget": budget,
            "runs": runs}  # fmt: skip


def constrained(tasks: list[str], methods: list[str], seeds: list[int], budget: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for name in tasks:
            task, rows = table_task(name, Path(folder)) if name in TABLES else nbg_task(name)
            accuracy, size = ("acc", "params") if name in TABLES else ("val_acc", "params_m")
            if name in TABLES:
                task = {**task, "known_before": [size]}  # NAS-Bench-Graph knows params_m itself
            limit = float(statistics.median(float(row[size]) for row in rows))
            best = max(row[accuracy] for row in rows if row[size] <= limit)
            for method in methods:
                for seed in seeds:
                    db = Path(folder) / f"{name}-{method}-c.db"
                    evaluations = run_search(task, [accuracy], method, seed, budget, db, [f"{size}<={limit!r}"])
                    feasible = [row["score"] for row in evaluations if row["status"] == "ok"]
                    found = max(feasible) if feasible else None
                    spent = sum(row["status"] == "infeasible" for row in evaluations)
                    runs.append({"task": name, "method": method, "seed": seed, "best_feasible": found,
                                 "feasible_optimum": best, "limit": limit,
                                 "infeasible_evaluations": spent})  # fmt: skip
                    print(f"{name} {method} seed {seed}: best feasible {found} (optimum {best})", flush=True)
    return {"budget": budget, "runs": runs}


def summary(document: dict[str, Any], key: str) -> list[str]:
    """Mean per task and method over the tasks every method ran, each method's mean rank over them (1 = best),
    and the first method against each other one, paired by (task, seed): better/level/worse."""
    runs = document["runs"]
    methods = list(dict.fromkeys(run["method"] for run in runs))
    value = {(r["task"], r["method"], r["seed"]): r[key] or 0.0 for r in runs}
    every = [t for t in dict.fromkeys(r["task"] for r in runs) if all(any(k[:2] == (t, m) for k in value)
                                                                        for m in methods)]  # fmt: skip
    means = {(t, m): statistics.fmean(v for k, v in value.items() if k[:2] == (t, m)) for t in every for m in methods}
    width = {m: max(16, len(m) + 2) for m in methods}
    lines = [f"{'task':<22}" + "".join(f"{m:>{width[m]}}" for m in methods)]
    ranks: dict[str, list[float]] = {m: [] for m in methods}
    for t in every:
        ordered = sorted(methods, key=lambda m: -means[t, m])
        for m in methods:
            ranks[m].append(1 + sum(means[t, other] > means[t, m] for other in methods))
        lines.append(f"{t:<22}" + "".join(f"{means[t, m]:>{width[m]}.4f}" for m in methods) + f"   best: {ordered[0]}")
    lines.append(f"{'mean rank':<22}" + "".join(f"{statistics.fmean(ranks[m]):>{width[m]}.2f}" for m in methods))
    first = methods[0]
    for other in methods[1:]:
        pairs = [(v, value[t, other, seed]) for (t, m, seed), v in value.items()
                 if m == first and t in every and (t, other, seed) in value]  # fmt: skip
        better, worse = sum(a > b for a, b in pairs), sum(a < b for a, b in pairs)
        lines.append(
            f"{first} vs {other}, paired: {better}/{len(pairs) - better - worse}/{worse} (better/level/worse)"
            + significance([a - b for a, b in pairs], [means[t, first] - means[t, other] for t in every])
        )
    if any("infeasible_evaluations" in r for r in runs):
        spent = {m: statistics.fmean(counted) for m in methods
                 if (counted := [r["infeasible_evaluations"] for r in runs
                                 if r["method"] == m and "infeasible_evaluations" in r])}  # fmt: skip
        lines.append("infeasible evaluations per run: " + ", ".join(f"{m} {v:.1f}" for m, v in spent.items()))
    return lines


def significance(run_differences: list[float], task_differences: list[float]) -> str:
    """Wilcoxon signed-rank tests of the differences, per run and per task's mean: how likely a margin this size
    is between two methods that are level."""
    from scipy.stats import wilcoxon

    def p(differences: list[float]) -> str:
        return f"{wilcoxon(differences).pvalue:.3f}" if sum(d != 0 for d in differences) > 1 else "-"

    return (f"; Wilcoxon p = {p(run_differences)} over the {len(run_differences)} runs, {p(task_differences)} over "
            f"the {len(task_differences)} tasks' means")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join((*NBG_DATASETS, *TABLES)))
    parser.add_argument("--methods", default=None, help=f"comma-separated (default {','.join(METHODS)}; "
                        "--constrained: inprocess,inprocess+blind,tpe+blind,gp+blind)")  # fmt: skip
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--constrained", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path, nargs="+", help="print the summary of results files and stop")
    args = parser.parse_args(argv)
    if args.summary:  # several files (one per task, or per method) are read as one; --methods: those, in order
        runs = [run for path in args.summary for run in json.loads(path.read_text())["runs"]]
        if args.methods:
            order = args.methods.split(",")
            runs = sorted((r for r in runs if r["method"] in order), key=lambda r: order.index(r["method"]))
        print("\n".join(summary({"runs": runs}, "best_feasible" if "limit" in runs[0] else "hv_ratio")))
        return 0
    tasks, seeds = args.tasks.split(","), parse_seeds(args.seeds)
    if args.constrained:
        methods = (args.methods or "inprocess,inprocess+blind,tpe+blind,gp+blind").split(",")
        document, key = constrained(tasks, methods, seeds, args.budget), "best_feasible"
    else:
        methods = (args.methods or ",".join(METHODS)).split(",")
        document, key = pareto(tasks, methods, seeds, args.budget), "hv_ratio"
    out = args.out or RESULTS / ("constrained.json" if args.constrained else "pareto.json")
    out.write_text(json.dumps(document, indent=1) + "\n")
    print("\n".join(summary(document, key)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
