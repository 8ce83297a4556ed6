"""``python main.py bench``: baselines and LLM rankers on NAS-Bench-201, seeds x datasets.

Every run goes through the real search loop. LLM methods share one managed
``transformers serve`` of the model (started once, reached as ``--ranker llm``).
Writes a markdown table (mean ± standard deviation over seeds of the best
validation accuracy and of the test accuracy of that architecture), a PNG of
best-so-far versus queries with ±1 standard deviation bands, and the raw runs as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.cli.common import UsageError
from agent.llm.local_server import LocalServer
from agent.runs.driver import Search, SearchConfig
from evaluators.nb201 import NB201_FILES, NB201Evaluator

# method -> (ranker, proposer, pool size, needs the LLM server)
METHODS: dict[str, tuple[str, str | None, int, bool]] = {
    "rs": ("random", None, 10, False),
    "re": ("evolution", None, 10, False),
    "tpe": ("tpe", None, 10, False),
    "llm-random-pool": ("llm", "random", 10, True),  # the paper's inference setting
    "llm-mixed-pool": ("llm", "mixed", 10, True),  # 5 random + 5 mutations of the top 10
    "random-mixed-pool": ("random", "mixed", 10, False),  # control: the mixed pool with a uniform pick
    "llm-evolution-pool": ("llm", "evolution", 10, True),  # the ranker picks one of 10 RE children
    "llm-generate": ("llm", "generate", 1, True),  # ablation: generation instead of ranking
    # reference: the classical per-slot model an LLM reading grade prompts would emulate, at its best
    "additive-random-pool": ("additive", "random", 10, False),
    "additive-mixed-pool": ("additive", "mixed", 10, False),
    "additive-evolution-pool": ("additive", "evolution", 10, False),
    # reference: the classical reading of the near prompt (a candidate's nearest history codes)
    "nearest-random-pool": ("nearest", "random", 10, False),
    "nearest-mixed-pool": ("nearest", "mixed", 10, False),
    "nearest-evolution-pool": ("nearest", "evolution", 10, False),
}


def run_one(method: str, dataset: str, seed: int, budget: int, data: str | None, llm: dict, db: Path) -> dict:
    ranker, proposer, pool, _ = METHODS[method]
    config = SearchConfig(
        task="nb201",
        dataset=dataset,
        ranker=ranker,
        proposer=proposer,
        pool_size=pool,
        budget=budget,
        seed=seed,
        task_options={"data": data} if data else {},
        ranker_options=llm if METHODS[method][3] else {},
    )
    search = Search(db)
    try:
        started = time.perf_counter()
        result = search.start(config)
        rows = list(search.store.evaluations(result.run_id))
        decisions = search.store.decisions(result.run_id)
    finally:
        search.close()
    best, trajectory = None, []
    for row in rows:
        if row["score"] is not None and (best is None or row["score"] > best["score"]):
            best = row
        trajectory.append(best["score"] if best else None)
    asked = [d for d in decisions if d["raw_answer"] is not None]
    return {
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "best_val": best["score"],
        "best_ncode": best["ncode"],
        "test_of_best": result.final_metrics["test_acc"],
        "trajectory": trajectory,
        "seconds": time.perf_counter() - started,
        "fallback_rate": sum(d["fallback"] for d in asked) / len(asked) if asked else None,
    }


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def table(runs: list[dict], methods: list[str], datasets: list[str]) -> str:
    lines = ["| method | " + " | ".join(f"{d} val | {d} test" for d in datasets) + " | fallback rate |"]
    lines.append("|---" * (2 * len(datasets) + 2) + "|")
    for method in methods:
        cells = []
        for dataset in datasets:
            chosen = [r for r in runs if r["method"] == method and r["dataset"] == dataset]
            cells += [mean_sd([r["best_val"] for r in chosen]), mean_sd([r["test_of_best"] for r in chosen])]
        rates = [r["fallback_rate"] for r in runs if r["method"] == method and r["fallback_rate"] is not None]
        rate = f"{statistics.mean(rates):.3f}" if rates else "-"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {rate} |")
    return "\n".join(lines)


def plot(runs: list[dict], methods: list[str], datasets: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), dpi=120, squeeze=False)
    tab20 = plt.get_cmap("tab20")  # ten strong colours, then their light pairs: distinct past ten methods
    colors = {method: tab20(2 * index % 20 + 2 * index // 20) for index, method in enumerate(methods)}
    for axis, dataset in zip(axes[0], datasets, strict=True):
        for method in methods:
            color = colors[method]
            curves = [r["trajectory"] for r in runs if r["method"] == method and r["dataset"] == dataset]
            values = np.array([[np.nan if v is None else v for v in curve] for curve in curves], dtype=float)
            mean, sd = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
            queries = np.arange(1, values.shape[1] + 1)
            axis.plot(queries, mean, label=method, color=color)
            axis.fill_between(queries, mean - sd, mean + sd, alpha=0.1, color=color)
        axis.set_title(f"NAS-Bench-201 {dataset}")
        axis.set_xlabel("queries")
        axis.set_ylabel("best validation accuracy (%)")
        low = np.nanpercentile([r["best_val"] for r in runs if r["dataset"] == dataset], 1)
        axis.set_ylim(bottom=low - 1.0)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python main.py bench", description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--datasets", nargs="+", default=list(NB201_FILES), choices=list(NB201_FILES))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--data", help="NAS-Bench-201 folder (default ../shared/data/nb201)")
    p.add_argument("--model", default=None, help="local model folder for LLM methods (default: LM-Searcher-tiny)")
    p.add_argument("--base-url", help="use an already running OpenAI-compatible server instead of --model")
    p.add_argument("--served-model", help="model name at --base-url")
    p.add_argument("--history-cap", type=int, help="history items in LLM prompts (default: the model's own)")
    p.add_argument("--out", default="benchmarks/results/nb201_bench", help="output prefix (.md, .png, .json)")
    p.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="JSON",
        help="earlier bench outputs whose runs (same method, dataset, seed and budget) are taken, not rerun: "
        "split a long bench over processes, or add a method to a table",
    )
    return p


def reusable_runs(paths: list[str], budget: int) -> dict[tuple[str, str, int], dict]:
    """Runs of earlier ``--out`` JSON files by (method, dataset, seed); a different budget is bad input."""
    found: dict[tuple[str, str, int], dict] = {}
    for path in paths:
        try:
            saved = json.loads(Path(path).read_text())
            runs, saved_budget = saved["runs"], saved["args"]["budget"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UsageError(
                f"--reuse {path}: not a bench output ({error}); give the .json a bench run wrote"
            ) from None
        if saved_budget != budget:
            raise UsageError(
                f"--reuse {path}: its runs have budget {saved_budget}, not {budget}; pass --budget {saved_budget}"
            )
        found.update(((run["method"], run["dataset"], run["seed"]), run) for run in runs)
    return found


def main(argv: list[str]) -> int:
    from prompts.card import DEFAULT_LOCAL_MODEL, model_card

    args = parser().parse_args(argv)
    for dataset in args.datasets:
        NB201Evaluator(dataset, args.data)  # fail now, with the file's name, if a table is missing
    reused = reusable_runs(args.reuse, args.budget)
    wanted = [(m, d, seed) for m in args.methods for d in args.datasets for seed in range(args.seeds)]
    needs_llm = any(METHODS[m][3] and (m, d, seed) not in reused for m, d, seed in wanted)
    server = None
    llm: dict[str, Any] = {}
    if needs_llm:
        if args.base_url:
            llm = {"base_url": args.base_url, "model": args.served_model}
        else:
            model = Path(args.model) if args.model else DEFAULT_LOCAL_MODEL
            server = LocalServer(model).start()
            llm = {"base_url": server.base_url, "model": str(server.model_path), **model_card(server.model_path)}
        if args.history_cap:
            llm["history_cap"] = args.history_cap
    runs: list[dict] = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            for method in args.methods:
                for dataset in args.datasets:
                    for seed in range(args.seeds):
                        run = reused.get((method, dataset, seed))
                        runs.append(
                            run or run_one(method, dataset, seed, args.budget, args.data, llm, Path(folder) / "b.db")
                        )
                    done = [r for r in runs if r["method"] == method and r["dataset"] == dataset]
                    print(f"{method:16s} {dataset:15s} {mean_sd([r['best_val'] for r in done])}", flush=True)
    finally:
        if server is not None:
            server.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    markdown = table(runs, args.methods, args.datasets)
    header = f"NAS-Bench-201, {args.seeds} seeds, {args.budget} queries: best validation / test of that arch (%)\n\n"
    out.with_suffix(".md").write_text(header + markdown + "\n")
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "runs": runs}))
    plot(runs, args.methods, args.datasets, out.with_suffix(".png"))
    print(header + markdown)
    print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.png')}, {out.with_suffix('.json')}")
    return 0
