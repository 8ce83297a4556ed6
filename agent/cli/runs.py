"""``runs``, ``show`` and ``export``: read what the run database holds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from agent.cli.common import DEFAULT_DB, UsageError, console, stdout_console
from agent.config import SearchConfig, run_file_text
from agent.runs.report import decision_summary, export_run, llm_call_summary, plot_trajectory
from agent.runs.store import RunStore, open_connection


def stored_run_file(run: dict[str, Any]) -> str:
    """The run file that starts this run again (a new run id: the same options, the same database)."""
    return run_file_text(SearchConfig.from_stored(run["config"]))


def write_text(path: Path, text: str) -> None:
    """Write a file the user named, or say in one line why it cannot be written."""
    try:
        path.write_text(text)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}; pass a writable file path") from None


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
    parser.add_argument("--save-config", metavar="RUN.yaml", help="write the run's options as a run file (--config)")
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
    if args.save_config:
        write_text(Path(args.save_config), stored_run_file(run))
        out.print(f"run file: {args.save_config} (python main.py --config {args.save_config} repeats the run)")
    return 0


def run_export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python main.py export", description="export a run's evaluations (csv, json) or its options (config)"
    )
    parser.add_argument("run_id")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument(
        "--format", choices=("csv", "json", "config"), default="csv", help="config: a run file for --config"
    )
    parser.add_argument("--out", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    store = open_store(args.db)
    run = store.get_run(args.run_id)
    if run is None:
        raise UsageError(f"no run {args.run_id!r} in {args.db}; list them with: python main.py runs --db {args.db}")
    text = stored_run_file(run) if args.format == "config" else export_run(store, args.run_id, args.format)
    if args.out:
        write_text(Path(args.out), text)
        console.print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0
