"""Command line: ``python main.py [search flags]`` and the ``runs``, ``show`` and ``export`` commands.

Exit codes: 0 done; 2 bad input (one line says what and how to fix it);
3 the run stopped on an outside failure and can be resumed; 130 interrupted
(resumable as well).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from agent.cli.common import (
    DEFAULT_DB,
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_STOPPED,
    UsageError,
    console,
    stdout_console,
)
from agent.llm.ranker import RankerSetupError, RankerUnavailable
from agent.loops.lmsearcher import Progress as LoopProgress
from agent.runs.driver import BASELINE_RANKERS, STRATEGIES, RunResult, Search, SearchConfig, SearchError, new_run_id
from agent.runs.report import decision_summary, export_run, llm_call_summary, plot_trajectory
from agent.runs.store import RunStore, StoreError, open_connection
from evaluators.registry import TASKS
from tools.evaluator import EvaluatorSetupError

COMMANDS = ("runs", "show", "export", "finetune", "bench")

def search_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python main.py",
        description="LM-Searcher: architecture and configuration search with LLM rankers. "
        f"Other commands: {', '.join(COMMANDS)} (python main.py COMMAND --help).",
    )
    parser.add_argument("--task", default="nas_bench_graph", help=f"what to search: {', '.join(TASKS)}")
    parser.add_argument("--dataset", help="the task's dataset (nb201: cifar10, cifar100, imagenet16-120)")
    parser.add_argument(
        "--ranker",
        default="local",
        help="who picks candidates: local (default: the shipped LM-Searcher-tiny, served offline), local:PATH, "
        f"llm (with --base-url/--model), openai:MODEL, or a baseline: {', '.join(BASELINE_RANKERS)}",
    )
    parser.add_argument(
        "--proposer", help="candidate pool: random, mutation, mixed, evolution, tpe, generate (LLM writes codes)"
    )
    parser.add_argument(
        "--strategy", default="lmsearcher", choices=STRATEGIES,
        help="lmsearcher (a ranker picks from a pool; default) or collm (CoLLM-NAS: Navigator and Generator LLMs)",
    )  # fmt: skip
    parser.add_argument("--budget", type=int, default=100, help="number of evaluations (default 100)")
    parser.add_argument("--batch", type=int, default=1, help="evaluations per step (k)")
    parser.add_argument("--pool-size", type=int, default=10, help="candidates the ranker sees per step")
    parser.add_argument("--random-fraction", type=float, default=0.5, help="share of random codes in a mixed pool")
    parser.add_argument("--population", type=int, default=30, help="regularized evolution population P")
    parser.add_argument("--sample-size", type=int, default=10, help="regularized evolution tournament size S")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", default=DEFAULT_DB, help=f"run database, shared by many runs (default {DEFAULT_DB})")
    parser.add_argument("--run-id", help="name of the new run (default: task, time and a random suffix)")
    parser.add_argument("--resume", metavar="RUN_ID", help="continue an unfinished run where it stopped")
    parser.add_argument(
        "--data",
        help="benchmark folder (nb201, nb_asr), results table (table), images/+masks/ folder (sam_lora) "
        "or parallel corpus folder (hat_mt)",
    )
    parser.add_argument("--space", help="YAML search space (--task table)")
    parser.add_argument("--metric", help="metric column to optimise (--task table)")
    parser.add_argument("--minimize", action="store_true", help="the metric is an error: lower is better")
    parser.add_argument("--simulated-cost", type=float, default=0.0, help="pad each evaluation to this many seconds")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parallel = parser.add_argument_group("parallel evaluation (stored with the run; a resumed run keeps them)")
    parallel.add_argument("--workers", type=int, default=1, help="evaluations at once (default 1)")
    parallel.add_argument(
        "--backend", choices=("local", "ray"), default="local",
        help="local: worker processes on this machine (default); ray: Ray actors (pip install '.[distributed]')",
    )  # fmt: skip
    parallel.add_argument(
        "--ray-address", help="an existing Ray cluster (e.g. 10.0.0.1:6379); default: $RAY_ADDRESS, else a local Ray"
    )
    parallel.add_argument(
        "--mode", choices=("auto", "sync", "async"), default="auto",
        help="async: decide whenever a worker is free; sync: steps of --batch codes; auto (default): async when "
        "--workers > 1 and --batch is 1",
    )  # fmt: skip
    parallel.add_argument("--eval-retries", type=int, default=2, help="retries when a worker dies (default 2)")
    parallel.add_argument("--worker-cpus", type=float, help="CPUs per Ray worker (default: what the task declares)")
    parallel.add_argument("--worker-gpus", type=float, help="GPUs per Ray worker (default: what the task declares)")
    train = parser.add_argument_group("training tasks (diffusion_lora, sam_lora, hat_mt); none given: tiny defaults")
    train.add_argument("--model-path", help="SD-1.5 folder (diffusers), SamModel folder, or super-net .pt (hat_mt)")
    train.add_argument("--clip-path", help="CLIPModel folder scoring the generated images (diffusion_lora)")
    train.add_argument("--concept-dir", help="folder of concept images, captions in <stem>.txt (diffusion_lora)")
    train.add_argument("--prompts", help="text file of validation prompts, one per line (diffusion_lora)")
    train.add_argument("--steps", type=int, help="steps per evaluation (LoRA tasks); super-net steps (hat_mt)")
    train.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")
    train.add_argument("--eval-timeout", type=float, help="seconds per evaluation; longer ones are recorded as failed")
    train.add_argument(
        "--latency-limit-ms", type=float, help="hat_mt: sub-transformers slower than this are infeasible (default 500)"
    )
    train.add_argument("--hat-scale", type=int, help="hat_mt: HAT's sizes divided by this (default 16; 1 = real size)")
    llm = parser.add_argument_group("LLM rankers (llm, openai:MODEL, local:PATH); keys come from the environment")
    llm.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (vLLM)")
    llm.add_argument("--model", help="model name the endpoint serves")
    llm.add_argument("--temperature", type=float, default=0.0)
    llm.add_argument("--max-tokens", type=int, default=64, help="answer length limit")
    llm.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    llm.add_argument(
        "--prompt-format",
        help="compact (the released model's; default), paper (Table 1), near (LM-Searcher-tiny's: one question "
        "per candidate), grade or choice (earlier tiny-model formats); a local model's card sets its own",
    )
    llm.add_argument("--history-cap", type=int, help="history items in the prompt, best first (default 200)")
    llm.add_argument("--max-reasks", type=int, default=3, help="re-asks with a fresh pool before falling back")
    llm.add_argument("--llm-retries", type=int, default=4, help="retries of timeouts, 429 and 5xx per request")
    llm.add_argument(
        "--parallel-requests", type=int, default=10, help="one-question-per-candidate formats: questions in flight"
    )
    collm = parser.add_argument_group("CoLLM-NAS (--strategy collm); models and URLs default to --model/--base-url")
    collm.add_argument("--navigator-model", help="the Navigator's model (stateful: sets the search direction)")
    collm.add_argument("--navigator-base-url", help="the Navigator's OpenAI-compatible endpoint")
    collm.add_argument("--generator-model", help="the Generator's model (stateless: writes candidate NCodes)")
    collm.add_argument("--generator-base-url", help="the Generator's OpenAI-compatible endpoint")
    collm.add_argument("--collm-batch", type=int, default=10, help="candidates per round (default 10)")
    collm.add_argument("--collm-temperature", type=float, default=0.6, help="sampling temperature (default 0.6)")
    collm.add_argument("--collm-max-tokens", type=int, default=1024, help="answer length limit per call")
    collm.add_argument("--target", type=float, help="stop once the best score reaches this value")
    collm.add_argument("--constraints", help="resource constraints in words, shown to the Navigator and Generator")
    return parser


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    task_options = {key: getattr(args, key) for key in ("data", "space", "metric") if getattr(args, key)}
    training = ("model_path", "clip_path", "concept_dir", "prompts", "steps", "device", "eval_timeout")
    training += ("latency_limit_ms", "hat_scale")
    task_options.update({key: getattr(args, key) for key in training if getattr(args, key) is not None})
    if args.minimize:
        task_options["minimize"] = True
    return SearchConfig(
        task=args.task,
        dataset=args.dataset,
        ranker=args.ranker,
        proposer=args.proposer,
        budget=args.budget,
        batch=args.batch,
        pool_size=args.pool_size,
        seed=args.seed,
        random_fraction=args.random_fraction,
        population=args.population,
        sample_size=args.sample_size,
        simulated_cost_s=args.simulated_cost,
        workers=args.workers,
        backend=args.backend,
        ray_address=args.ray_address,
        mode=args.mode,
        eval_retries=args.eval_retries,
        worker_resources={
            key: value
            for key, value in (("num_cpus", args.worker_cpus), ("num_gpus", args.worker_gpus))
            if value is not None
        },
        task_options=task_options,
        ranker_options={
            "base_url": args.base_url,
            "model": args.model,
            "temperature": args.temperature,
            "max_tokens": args.max_tokens,
            "timeout_s": args.timeout,
            "prompt_format": args.prompt_format,
            "history_cap": args.history_cap,
            "max_reasks": args.max_reasks,
            "retries": args.llm_retries,
            "parallel_requests": args.parallel_requests,
        },
        strategy=args.strategy,
        collm_options={
            "navigator_model": args.navigator_model,
            "navigator_base_url": args.navigator_base_url,
            "generator_model": args.generator_model,
            "generator_base_url": args.generator_base_url,
            "batch": args.collm_batch,
            "temperature": args.collm_temperature,
            "max_tokens": args.collm_max_tokens,
            "target": args.target,
            "constraints": args.constraints,
        },
    )


class ProgressDisplay:
    """A rich progress bar with best-so-far and ETA, fed by the record node."""

    def __init__(self, quiet: bool) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
        )
        self.task_id = None

    def __enter__(self) -> ProgressDisplay:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, progress: LoopProgress) -> None:
        best = "-" if progress.best_score is None else f"{progress.best_score:.4g} ({progress.best_ncode})"
        counts = f"done {progress.evaluations} failed {progress.failed}"
        if progress.last:
            counts += f" | last evaluation {progress.last[-1][1].cost_s:.2f} s"
        if progress.running or progress.queued:
            counts = f"running {progress.running} queued {progress.queued} {counts}"
        if self.task_id is None:
            self.task_id = self.bar.add_task("searching", total=progress.budget, best=best, counts=counts)
        self.bar.update(self.task_id, completed=progress.evaluations, best=best, counts=counts)


def print_summary(result: RunResult, db: Path, wall_s: float) -> None:
    run_metric = result.evaluator.metric
    table = Table(title=f"run {result.run_id}", show_header=False)
    table.add_row("task", f"{result.evaluator.describe()}")
    table.add_row("evaluations", str(result.evaluations))
    table.add_row("best NCode", str(result.best_ncode))
    table.add_row(f"best {run_metric.name}", "-" if result.best_score is None else f"{result.best_score:.4f}")
    for name, value in result.final_metrics.items():
        table.add_row(f"  {name} of best", f"{value:.4f}" if isinstance(value, float) else str(value))
    if result.costs_s:
        costs = sorted(result.costs_s)
        table.add_row("s per evaluation", f"median {costs[len(costs) // 2]:.3f}, max {costs[-1]:.3f}")
    table.add_row("wall time", f"{wall_s:.1f} s")
    table.add_row("database", str(db))
    stdout_console().print(table)
    print(f"inspect: python main.py show {result.run_id} --db {db}")


def run_search(argv: list[str]) -> int:
    args = search_parser().parse_args(argv)
    db = Path(args.db)
    config = config_from_args(args)
    run_id = args.resume or args.run_id or new_run_id(config)
    search = Search(db)
    started = time.perf_counter()
    try:
        with ProgressDisplay(args.quiet) as display:
            if args.resume:
                result = search.resume(run_id, on_progress=display)
            else:
                result = search.start(config, run_id=run_id, on_progress=display)
    except RankerUnavailable as error:
        console.print(
            f"[red]stopped:[/red] {error}. Everything so far is saved; once the ranker is back, "
            f"continue with: {resume_hint(run_id, db)}",
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_STOPPED
    except KeyboardInterrupt:
        run = search.store.get_run(run_id)
        if run is not None and run["status"] == "finished":  # ctrl-c landed after the last write: nothing to resume
            console.print(f"interrupted after the run finished; see it with: python main.py show {run_id} --db {db}")
        else:
            console.print(f"interrupted; every finished evaluation is saved. Continue with: {resume_hint(run_id, db)}")
        return EXIT_INTERRUPTED
    finally:
        search.close()
    print_summary(result, db, time.perf_counter() - started)
    return 0


def resume_hint(run_id: str, db: Path) -> str:
    return f"python main.py --resume {run_id} --db {db}"


def open_store(db: str) -> RunStore:
    if not Path(db).exists():
        raise UsageError(f"database {db} does not exist; run a search first or pass --db")
    return RunStore(open_connection(db))


def run_list(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python main.py runs", description="list the runs in a database")
    parser.add_argument("--db", default=DEFAULT_DB)
    args = parser.parse_args(argv)
    table = Table("run", "status", "task", "dataset", "evals", "best", "best NCode")
    for run in open_store(args.db).list_runs():
        best = "-" if run["best_score"] is None else f"{run['best_score']:.4f}"
        table.add_row(
            run["run_id"], run["status"], run["task"], run["dataset"] or "",
            f"{run['n_evaluations']}/{run['budget']}", best, run["best_ncode"] or "",
        )  # fmt: skip
    stdout_console().print(table)
    return 0


def run_show(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python main.py show", description="summarise one run")
    parser.add_argument("run_id")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--top", type=int, default=10, help="rows of the history table (best first)")
    parser.add_argument("--plot", help="PNG path for the trajectory (default: next to the database)")
    args = parser.parse_args(argv)
    store = open_store(args.db)
    run = store.get_run(args.run_id)
    if run is None:
        raise UsageError(f"no run {args.run_id!r} in {args.db}; list them with: python main.py runs --db {args.db}")
    out = stdout_console()
    header = Table(show_header=False, title=f"run {run['run_id']} ({run['status']})")
    header.add_row("task", f"{run['task']} {run['dataset'] or ''}")
    header.add_row("evaluations", f"{run['n_evaluations']}/{run['budget']}")
    header.add_row(f"best {run['metric']}", f"{run['best_score']} ({run['best_ncode']})")
    for name, value in json.loads(run["final_metrics"] or "{}").items():
        header.add_row(f"  {name} of best", str(value))
    collm = llm_call_summary(store.llm_calls(args.run_id), store.collm_rounds(args.run_id))  # CoLLM-NAS runs
    for name, value in (collm or decision_summary(store.decisions(args.run_id))).items():
        header.add_row(name.replace("_", " "), f"{value:.3f}" if isinstance(value, float) else str(value))
    if run["error"]:
        header.add_row("stopped by", run["error"])
    out.print(header)
    rows = [r for r in store.evaluations(args.run_id) if r["score"] is not None]
    rows.sort(key=lambda r: r["score"], reverse=bool(run["maximize"]))
    history = Table("#", "iteration", "NCode", run["metric"], "cost s", title=f"best {args.top} evaluations")
    for place, row in enumerate(rows[: args.top], start=1):
        history.add_row(str(place), str(row["iteration"]), row["ncode"], f"{row['score']:.4f}", f"{row['cost_s']:.2f}")
    out.print(history)
    failed = [r for r in store.evaluations(args.run_id) if r["status"] != "ok"]
    if failed:
        out.print(f"{len(failed)} failed evaluation(s); first: {failed[0]['ncode']}: {failed[0]['error']}")
    plot = Path(args.plot) if args.plot else Path(args.db).with_name(f"{args.run_id}.png")
    out.print(f"trajectory plot: {plot_trajectory(store, args.run_id, plot)}")
    return 0


def run_export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python main.py export", description="export a run as CSV or JSON")
    parser.add_argument("run_id")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--format", choices=("csv", "json"), default="csv")
    parser.add_argument("--out", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    store = open_store(args.db)
    if store.get_run(args.run_id) is None:
        raise UsageError(f"no run {args.run_id!r} in {args.db}; list them with: python main.py runs --db {args.db}")
    text = export_run(store, args.run_id, args.format)
    if args.out:
        Path(args.out).write_text(text)
        console.print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def run_finetune(argv: list[str]) -> int:
    from finetune.cli import main as finetune_main  # torch and transformers load only when needed

    return finetune_main(argv)


def run_bench(argv: list[str]) -> int:
    from agent.cli.bench import main as bench_main

    return bench_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    handlers = {"runs": run_list, "show": run_show, "export": run_export, "bench": run_bench, "finetune": run_finetune}
    handler = handlers.get(argv[0]) if argv else None
    try:
        return handler(argv[1:]) if handler else run_search(argv)
    except (SearchError, EvaluatorSetupError, StoreError, UsageError, RankerSetupError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
