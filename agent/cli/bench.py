"""``python main.py bench``: baselines and LLM rankers on any task, seeds x datasets.

Every run goes through the real search loop with the task options the search command
takes (``--task``, ``--space``, ``--data``, ``--metric``, ...; NAS-Bench-201 by default).
LLM methods share one managed ``transformers serve`` of the model (started once, reached
as ``--ranker llm``). Writes a markdown table (mean ± standard deviation over seeds of the
best score found and, when the task reports one, a final metric of that candidate such as
NB201's test accuracy), a PNG of best-so-far versus queries with ±1 standard deviation
bands, and the raw runs as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import tempfile
import time
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from agent.cli.common import UsageError
from agent.cli.search import add_config_flags
from agent.config import SearchConfig
from agent.driver import Search
from agent.llm.local_server import LocalServer
from evaluators.nb201 import NB201_FILES
from evaluators.registry import make_evaluator
from tools.evaluator import Evaluator, Metric


class Method(NamedTuple):
    ranker: str
    proposer: str | None
    pool: int  # candidates per step
    needs_llm: bool  # reaches the managed LLM server
    options: tuple[tuple[str, Any], ...] = ()  # more search options, as (name, value)


METHODS: dict[str, Method] = {
    "rs": Method("random", None, 10, False),
    "re": Method("evolution", None, 10, False),
    "tpe": Method("tpe", None, 10, False),
    "ls": Method("local-search", None, 10, False),  # local search, NASLib's variant (White et al. 2021)
    # Bayesian optimisation: a GP with a Hamming-distance kernel (Optuna's GPSampler)
    "gp": Method("gp", None, 10, False),
    "llm-random-pool": Method("llm", "random", 10, True),  # the paper's inference setting
    "llm-mixed-pool": Method("llm", "mixed", 10, True),  # 5 random + 5 mutations of the top 10
    "random-mixed-pool": Method("random", "mixed", 10, False),  # control: the mixed pool with a uniform pick
    "llm-evolution-pool": Method("llm", "evolution", 10, True),  # the ranker picks one of 10 RE children
    "llm-generate": Method("llm", "generate", 1, True),  # ablation: generation instead of ranking
    # the model scored in this process: each candidate's expected grade instead of its greedy digit
    "llm-expected-mixed-pool": Method("inprocess", "mixed", 10, False),
    "llm-expected-evolution-pool": Method("inprocess", "evolution", 10, False),
    # the ranker and Bayesian optimisation take turns (the GP's suggestion every 2nd step)
    "llm-expected-portfolio": Method("inprocess", "portfolio", 10, False),
    # the mixed pool with Bayesian optimisation's suggestion in it, for the ranker to take or leave
    "llm-expected-mixed-gp-pool": Method("inprocess", "mixed-gp", 10, False),
    "llm-expected-mixed-tpe-pool": Method("inprocess", "mixed-tpe", 10, False),
    # the default's levers: ten random picks before the model decides (as TPE's and the GP's start), a pool of 20
    "llm-expected-mixed-pool-start10": Method("inprocess", "mixed", 10, False, (("random_start", 10),)),
    "llm-expected-mixed-pool-20": Method("inprocess", "mixed", 20, False),
    # reference: the classical per-slot model an LLM reading grade prompts would emulate, at its best
    "additive-random-pool": Method("additive", "random", 10, False),
    "additive-mixed-pool": Method("additive", "mixed", 10, False),
    "additive-evolution-pool": Method("additive", "evolution", 10, False),
    # reference: the classical reading of the near prompt (a candidate's nearest history codes)
    "nearest-random-pool": Method("nearest", "random", 10, False),
    "nearest-mixed-pool": Method("nearest", "mixed", 10, False),
    "nearest-evolution-pool": Method("nearest", "evolution", 10, False),
    "nearest-mean-mixed-pool": Method("nearest-mean", "mixed", 10, False),  # fractional grades: expected grades' reader
}
# A bench measures a ranker as it is, falling back or not: its table reports each method's fallback rate.
NO_FALLBACK_GUARD = {"fallback_limit": 0, "fallback_share": 0.0}
DEFAULT_TASK = "nb201"
TASK_GROUPS = ("task", "training")  # the search command's options that define what is searched
TASK_FIELDS = tuple(f.name for f in fields(SearchConfig) if f.metadata["group"] in TASK_GROUPS)


def run_config(
    task: dict[str, Any],
    method: str,
    dataset: str | None,
    seed: int,
    budget: int,
    llm: dict,
    model: str | None = None,
    history_cap: int | None = None,
) -> SearchConfig:
    """One run's config: the task options, the method's ranker, proposer and pool, the seed. ``llm`` holds
    the served model's settings; an in-process method scores ``model`` (default: the shipped one) itself.
    ``history_cap`` goes to every method that reads a candidate's history: the LLM and nearest rankers."""
    ranker, proposer, pool, needs_llm, options = METHODS[method]
    values = {**task, **dict(options), "dataset": dataset, "ranker": ranker, "proposer": proposer, "pool_size": pool}
    if ranker == "inprocess":
        values.update(NO_FALLBACK_GUARD, ranker=f"inprocess:{model}" if model else ranker)
    if history_cap is not None and (needs_llm or ranker in ("inprocess", "nearest", "nearest-mean")):
        values["history_cap"] = history_cap
    return SearchConfig.from_mapping({**values, "budget": budget, "seed": seed, **(llm if needs_llm else {})})


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_one(config: SearchConfig, method: str, metric: Metric, db: Path) -> dict:
    """One search; its record keeps what the table, the plot and ``--reuse`` need."""
    search = Search(db)
    try:
        started = time.perf_counter()
        result = search.start(config)
        rows = list(search.store.evaluations(result.run_id))
        decisions = search.store.decisions(result.run_id)
    finally:
        search.close()
    best: float | None = None
    trajectory = []
    for row in rows:  # finished, feasible results only: a stopped or infeasible score is never the best
        score = row["score"] if row["status"] == "ok" else None
        if score is not None and (best is None or metric.utility(score) > metric.utility(best)):
            best = score
        trajectory.append(best)
    asked = [d for d in decisions if d["raw_answer"] is not None]
    return {
        "method": method,
        "run_id": result.run_id,
        "dataset": config.dataset,
        "seed": config.seed,
        "best": result.best_score,
        "best_ncode": result.best_ncode,
        "final_metrics": result.final_metrics,
        "trajectory": trajectory,
        "seconds": time.perf_counter() - started,
        "fallback_rate": sum(d["fallback"] for d in asked) / len(asked) if asked else None,
    }


def mean_sd(scores: list[float | None]) -> str:
    """Four significant digits of the mean (at least two decimals): accuracies in % and in [0, 1] alike;
    runs without a score (every evaluation failed) are left out, and none at all shows as '-'."""
    values = [value for value in scores if value is not None]
    if not values:
        return "-"
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    decimals = min(6, max(2, 3 - math.floor(math.log10(abs(mean))))) if mean else 2
    return f"{mean:.{decimals}f} ± {sd:.{decimals}f}"


def number(value: Any) -> float | None:
    """A final metric as a number; results tables read from CSV hold text."""
    if isinstance(value, bool):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def final_metric(runs: list[dict]) -> str | None:
    """The first final metric (in the evaluator's order) that every run reports as a number: NB201's test_acc."""
    if not runs or any(run["best"] is None for run in runs):
        return None
    for name in runs[0]["final_metrics"]:
        if all(number(run["final_metrics"].get(name)) is not None for run in runs):
            return name
    return None


def label(dataset: str | None, evaluator: Evaluator) -> str:
    """How a dataset is named in the table and plot; a task without datasets by its space."""
    return dataset or evaluator.space.name


def table(runs: list[dict], methods: list[str], evaluators: dict[str | None, Evaluator]) -> str:
    """Per dataset: the best score's column, and the final metric of the best when every run has one."""
    columns: list[tuple[str | None, str | None]] = []  # (dataset, final metric or None for the best score)
    for dataset in evaluators:
        columns.append((dataset, None))
        name = final_metric([r for r in runs if r["dataset"] == dataset])
        if name:
            columns.append((dataset, name))
    titles = [
        f"{label(d, evaluators[d])} {f'{name} of best' if name else f'best {evaluators[d].metric.name}'}"
        for d, name in columns
    ]
    lines = ["| method | " + " | ".join(titles) + " | fallback rate |", "|---" * (len(columns) + 2) + "|"]
    for method in methods:
        cells = []
        for dataset, name in columns:
            chosen = [r for r in runs if r["method"] == method and r["dataset"] == dataset]
            cells.append(mean_sd([number(r["final_metrics"][name]) if name else r["best"] for r in chosen]))
        rates = [r["fallback_rate"] for r in runs if r["method"] == method and r["fallback_rate"] is not None]
        rate = f"{statistics.mean(rates):.3f}" if rates else "-"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {rate} |")
    return "\n".join(lines)


def direction(metric: Metric) -> str:
    return "higher is better" if metric.maximize else "lower is better"


def plot(
    runs: list[dict], methods: list[str], task: str, evaluators: dict[str | None, Evaluator], seeds: int, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(1, len(evaluators), figsize=(5 * len(evaluators), 3.9), dpi=120, squeeze=False)
    tab20 = plt.get_cmap("tab20")  # ten strong colours, then their light pairs: distinct past ten methods
    colors = {method: tab20(2 * index % 20 + 2 * index // 20) for index, method in enumerate(methods)}
    for axis, (dataset, evaluator) in zip(axes[0], evaluators.items(), strict=True):
        metric = evaluator.metric
        for method in methods:
            curves = [r["trajectory"] for r in runs if r["method"] == method and r["dataset"] == dataset]
            values = np.array([[np.nan if v is None else v for v in curve] for curve in curves], dtype=float)
            mean, sd = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
            queries = np.arange(1, values.shape[1] + 1)
            axis.plot(queries, mean, label=method, color=colors[method])
            axis.fill_between(queries, mean - sd, mean + sd, alpha=0.1, color=colors[method])
        axis.set_title(f"{task} {label(dataset, evaluator)}")
        axis.set_xlabel("queries")
        axis.set_ylabel(f"best {metric.name} so far ({direction(metric)})")
        bests = [r["best"] for r in runs if r["dataset"] == dataset and r["best"] is not None]
        if bests:  # early queries would stretch the axis: show the range the runs end in, and a margin
            worst = np.percentile(bests, 1 if metric.maximize else 99)
            margin = abs(max(bests) - min(bests)) or abs(worst) * 0.01 or 1.0
            axis.set_ylim(**({"bottom": worst - margin} if metric.maximize else {"top": worst + margin}))
    last = list(evaluators.values())[-1].metric
    axes[0][-1].legend(fontsize=7, loc="lower right" if last.maximize else "upper right")
    figure.suptitle(f"best so far: mean ± 1 sd (bands) over {seeds} seeds", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python main.py bench", description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument(
        "--datasets",
        nargs="+",
        help=f"the task's datasets to run over (default: --dataset; for nb201 {' '.join(NB201_FILES)})",
    )
    p.add_argument(
        "--seeds", type=at_least_one, default=10, help="runs per method and dataset, seeds 0..N-1 (default 10)"
    )
    p.add_argument("--budget", type=int, default=100, help="evaluations per run (default 100)")
    p.add_argument("--model", default=None, help="local model folder for LLM methods (default: LM-Searcher-tiny)")
    p.add_argument("--base-url", help="use an already running OpenAI-compatible server instead of --model")
    p.add_argument("--served-model", help="model name at --base-url")
    p.add_argument(
        "--model-card",
        help="the model's card, its folder or its lmsearcher.json: the prompt format and history cap of LLM methods "
        "(default: --model's own card; needed with --base-url)",
    )
    p.add_argument(
        "--history-cap",
        type=int,
        help="history items in LLM prompts and nearest readers (default: the model's own; nearest: 24)",
    )
    p.add_argument("--out", help="output prefix (.md, .png, .json); default runs/bench/TASK-TIME/bench")
    p.add_argument(
        "--db",
        help="keep every run in this SQLite database, for `runs`, `show` (each decision) and `export` (default: a "
        "temporary one, deleted at the end); each run's id is in the JSON",
    )
    p.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="JSON",
        help="earlier bench outputs whose runs (same task, method, dataset, seed and budget) are taken, not rerun: "
        "split a long bench over processes, or add a method to a table",
    )
    add_config_flags(p, TASK_GROUPS, defaults={"task": DEFAULT_TASK})
    return p


def datasets_of(args: argparse.Namespace) -> list[str | None]:
    """``--datasets``, else ``--dataset``, else NB201's three, else the task's own default (None)."""
    dataset = getattr(args, "dataset", None)
    if args.datasets and dataset is not None:
        raise UsageError("give --datasets or --dataset, not both")
    if args.datasets:
        return list(dict.fromkeys(args.datasets))
    if dataset is not None:
        return [dataset]
    return list(NB201_FILES) if args.task == DEFAULT_TASK else [None]


def from_saved(run: dict) -> dict:
    """A run record in today's keys; files from before bench took any task kept ``best_val``/``test_of_best``."""
    if "best" in run:
        return run
    record = {key: value for key, value in run.items() if key not in ("best_val", "test_of_best")}
    return {**record, "best": run["best_val"], "final_metrics": {"test_acc": run["test_of_best"]}}


# what runs to reuse must share, with their defaults
REUSE_KEYS = {"task": DEFAULT_TASK, "metric": None, "minimize": False, "history_cap": None}


def reusable_runs(paths: list[str], budget: int, task: dict[str, Any]) -> dict[tuple[str, str | None, int], dict]:
    """Runs of earlier ``--out`` JSON files by (method, dataset, seed); another budget, task, metric or history
    cap is bad input (folders such as --data may differ: a long bench is split over machines)."""
    found: dict[tuple[str, str | None, int], dict] = {}
    for path in paths:
        try:
            saved = json.loads(Path(path).read_text())
            runs, saved_budget = [from_saved(run) for run in saved["runs"]], saved["args"]["budget"]
            saved_task = {key: saved["args"].get(key, default) for key, default in REUSE_KEYS.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise UsageError(
                f"--reuse {path}: not a bench output ({error}); give the .json a bench run wrote"
            ) from None
        if saved_budget != budget:
            raise UsageError(
                f"--reuse {path}: its runs have budget {saved_budget}, not {budget}; pass --budget {saved_budget}"
            )
        for key, default in REUSE_KEYS.items():
            if saved_task[key] != task.get(key, default):
                raise UsageError(f"--reuse {path}: its runs have {key} {saved_task[key]}, not {task.get(key, default)}")
        found.update(((run["method"], run["dataset"], run["seed"]), run) for run in runs)
    return found


def output_prefix(out: str | None, task: str) -> Path:
    """``--out``, else a fresh folder under runs/bench/ (git-ignored): never the committed benchmarks/results/."""
    if out:
        path = Path(out)
    else:
        safe_task = re.sub(r"[^A-Za-z0-9_.-]+", "_", task)
        path = Path("runs") / "bench" / f"{safe_task}-{datetime.now():%Y%m%d-%H%M%S}" / "bench"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {path}: cannot create {path.parent} ({error.strerror or error})") from None
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"--out {path}: {path.parent} is not writable; pass another --out")
    return path


def write_outputs(
    out: Path, text: str, args: argparse.Namespace, runs: list[dict], evaluators: dict[str | None, Evaluator]
) -> list[Path]:
    """The table, the raw runs and the plot; a failing write is bad input (the --out), not a crash."""
    paths = [out.with_suffix(".md"), out.with_suffix(".json"), out.with_suffix(".png")]
    try:
        paths[0].write_text(text)
        paths[1].write_text(json.dumps({"args": vars(args), "runs": runs}))
        plot(runs, args.methods, args.task, evaluators, args.seeds, paths[2])
    except OSError as error:
        raise UsageError(f"--out {out}: cannot write ({error.strerror or error})") from None
    return paths


def main(argv: list[str]) -> int:
    from agent.llm.ranker import card_settings
    from prompts.card import DEFAULT_LOCAL_MODEL, MODEL_CARD

    args = parser().parse_args(argv)
    task = {name: getattr(args, name) for name in TASK_FIELDS if hasattr(args, name)}  # flags given, and the task
    datasets = datasets_of(args)
    evaluators: dict[str | None, Evaluator] = {}
    for dataset in datasets:  # fail now, in one line, on a bad path, space or option; not after hours of runs
        config = SearchConfig.from_mapping({**task, "dataset": dataset}, source="options")
        evaluators[dataset] = make_evaluator(config.task, config.task_options())
        for method in args.methods:
            run_config(task, method, dataset, 0, args.budget, {}, args.model, args.history_cap).check()
    reused = reusable_runs(args.reuse, args.budget, {**task, "history_cap": args.history_cap})
    out = output_prefix(args.out, args.task)
    if args.db:
        Search(args.db).close()  # a database that cannot be opened or is not a run store fails now, in one line
    wanted = [(m, d, seed) for m in args.methods for d in datasets for seed in range(args.seeds)]
    needs_llm = any(METHODS[m].needs_llm and (m, d, seed) not in reused for m, d, seed in wanted)
    server = None
    llm: dict[str, Any] = {}
    if needs_llm:
        card_settings(args.model_card, None)  # a missing card fails now, not at the first LLM run
        if args.base_url:
            llm = {"base_url": args.base_url, "model": args.served_model, "model_card": args.model_card}
        else:
            model = Path(args.model) if args.model else DEFAULT_LOCAL_MODEL
            server = LocalServer(model).start()
            own = str(server.model_path) if (server.model_path / MODEL_CARD).is_file() else None
            llm = {"base_url": server.base_url, "model": str(server.model_path), "model_card": args.model_card or own}
        llm.update(NO_FALLBACK_GUARD)
    runs: list[dict] = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            db = Path(args.db) if args.db else Path(folder) / "b.db"
            for method in args.methods:
                for dataset in datasets:
                    metric = evaluators[dataset].metric
                    for seed in range(args.seeds):
                        config = run_config(task, method, dataset, seed, args.budget, llm, args.model, args.history_cap)
                        runs.append(reused.get((method, dataset, seed)) or run_one(config, method, metric, db))
                    done = [r["best"] for r in runs if r["method"] == method and r["dataset"] == dataset]
                    print(f"{method:16s} {label(dataset, evaluators[dataset]):15s} {mean_sd(done)}", flush=True)
    finally:
        if server is not None:
            server.stop()
    markdown = table(runs, args.methods, evaluators)
    metrics = sorted({f"best {e.metric.name} ({direction(e.metric)})" for e in evaluators.values()})
    header = (
        f"{args.task}, {args.seeds} seeds, {args.budget} queries. Cells: mean ± sd over seeds of the "
        f"{', '.join(metrics)}; 'X of best': the final metric X of that candidate.\n\n"
    )
    written = write_outputs(out, header + markdown + "\n", args, runs, evaluators)
    print(header + markdown)
    print(f"wrote {', '.join(map(str, written))}")
    return 0
