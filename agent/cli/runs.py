"""``runs``, ``show``, ``export`` and ``compare``: read what the run database holds."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from agent.cli.common import DEFAULT_DB, UsageError, console, stdout_console
from agent.config import SearchConfig, run_file_text
from agent.final import FinalScore, final_scores
from agent.runs.report import (
    best_so_far,
    decision_rows,
    decision_summary,
    export_run,
    front_flags,
    llm_call_summary,
    plot_comparison,
    plot_curves,
    plot_pareto,
    plot_trajectory,
    regret,
    run_objectives,
    search_method,
    table_optimum,
)
from agent.runs.store import RunStore, open_reader, pairs_of, unusable
from agent.strategies.rankers import RANDOM_START
from tools.evaluator import EvaluatorSetupError, Metric
from tools.io_checks import file_in_the_way
from tools.objectives import Objective


def stored_run_file(run: dict[str, Any]) -> str:
    """The run file that starts this run again (a new run id: the same options, the same database)."""
    return run_file_text(SearchConfig.from_stored(run["config"]))


def number(value: Any) -> str:
    """A float rounded to what it means: four decimals (91.6067), four significant digits when tiny or huge."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.4f}" if value == 0 or 0.01 <= abs(value) < 1e6 else f"{value:.4g}"


def decoded(config: Any) -> str:
    """A configuration as slot=value pairs (what an NCode means), long ones shortened to fit a table cell."""
    if not isinstance(config, dict):
        return ""
    return shorten(", ".join(f"{slot}={number(value)}" for slot, value in config.items()), 90)


def step_text(step: float | None) -> str:
    """A step (epoch) as written: 3, 2.5; '-' when unknown."""
    return "-" if step is None else f"{step:g}"


def summary_value(name: str, value: Any) -> str:
    """A ranker summary's number: rates always to three decimals (0.000, 1.000), other whole numbers (token
    counts) as integers."""
    if isinstance(value, float):
        return f"{value:.3f}" if name.endswith("_rate") or not value.is_integer() else str(int(value))
    return number(value)


def safe_name(text: str) -> str:
    """A file name made from a run id, which may hold slashes or other characters a path cannot."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".") or "run"


def output_file(value: str, example: str) -> Path:
    """A file the user asked for, checked before any work, so that a bad path costs one line and no output.

    One rule for every command's output path, as for ``--db`` and ``bench --out``: missing folders are made
    when the file is written; a file standing where a folder should be is refused."""
    path = Path(value)
    if path.is_dir():
        raise UsageError(f"cannot write {path}: it is a folder; pass a file path such as {path / example}")
    blocking = file_in_the_way(path)
    if blocking is not None:
        raise UsageError(f"cannot write {path}: {blocking} is a file, not a folder; pass another path")
    return path


def write_text(path: Path, text: str) -> None:
    """Write a file the user named (making its folders), or say in one line why it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}; pass a writable file path") from None


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


@contextmanager
def reading(db: str) -> Iterator[RunStore]:
    """An existing run database opened read-only, closed afterwards; SQLite failing while reading it (a corrupt
    page) is one line."""
    if not Path(db).exists():
        raise UsageError(f"database {db} does not exist; run a search first or pass --db")
    store = open_reader(db)
    try:
        yield store
    except sqlite3.DatabaseError as error:
        raise unusable(db, error) from None
    finally:
        store.db.conn.close()


def stored_run(store: RunStore, run_id: str, db: str) -> dict[str, Any]:
    run = store.get_run(run_id)
    if run is None:
        raise UsageError(f"no run {run_id!r} in {db}; list them with: python main.py runs --db {db}")
    return run


def task_label(run: dict[str, Any]) -> str:
    return f"{run['task']} {run['dataset'] or ''}".strip()


def direction(run: dict[str, Any]) -> str:
    return "higher is better" if run["maximize"] else "lower is better"


def run_list(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python main.py runs", description="list the runs in a database")
    parser.add_argument("--db", default=DEFAULT_DB)
    args = parser.parse_args(argv)
    table = Table("run", "status", "task", "dataset", "ranker", "proposer", "evals", "best", "best NCode")
    table.columns[0].overflow = "fold"  # run ids are what users copy: folded onto more lines, never cut
    with reading(args.db) as store:
        for run in store.list_runs():
            method = search_method({**run, "config": json.loads(run["config"])})
            table.add_row(
                escape(run["run_id"]), run["status"], run["task"], run["dataset"] or "", method["ranker"],
                method["proposer"], f"{run['n_evaluations']}/{run['budget']}", number(run["best_score"]),
                run["best_ncode"] or "",
            )  # fmt: skip
    stdout_console().print(table)
    return 0


def run_show(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python main.py show", description="summarise one run")
    parser.add_argument("run_id")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--top", type=non_negative, default=10, help="rows of the history table (best first)")
    parser.add_argument(
        "--decisions", type=non_negative, default=0, metavar="N",
        help="list the last N ranker decisions: pool, pick and each candidate's grade or the raw answer",
    )  # fmt: skip
    parser.add_argument("--plot", help="PNG path for the trajectory (default: next to the database)")
    parser.add_argument("--save-config", metavar="RUN.yaml", help="write the run's options as a run file (--config)")
    args = parser.parse_args(argv)
    plot = output_file(args.plot, f"{safe_name(args.run_id)}.png") if args.plot else None
    saved = output_file(args.save_config, "run.yaml") if args.save_config else None
    with reading(args.db) as store:
        run = stored_run(store, args.run_id, args.db)
        out = stdout_console()
        evaluations = list(store.evaluations(args.run_id))
        decisions = store.decisions(args.run_id)  # read once: the header, the dropped codes and --decisions
        collm = llm_call_summary(store.llm_calls(args.run_id), store.collm_rounds(args.run_id))  # CoLLM-NAS runs
        out.print(run_header(run, evaluations, collm or decision_summary(decisions)))
        rows = sorted(
            (r for r in evaluations if r["status"] == "ok" and r["score"] is not None),
            key=lambda r: r["score"], reverse=bool(run["maximize"]),
        )  # fmt: skip
        steps = any(r["fidelity"] is not None for r in evaluations)
        columns = ["#", "iteration", "NCode", run["metric"], *(["steps"] * steps), "cost s", "configuration"]
        history = Table(*columns, title=f"best {args.top} finished evaluations")
        queued = set(store.queued(args.run_id))
        for place, row in enumerate(rows[: args.top], start=1):
            fidelity = [step_text(row["fidelity"])] * steps
            cost = f"{row['cost_s']:.2f}"
            iteration = f"{row['iteration']} (queued)" if row["ncode"] in queued else str(row["iteration"])
            history.add_row(
                str(place), iteration, row["ncode"], number(row["score"]), *fidelity, cost,
                escape(decoded(row["config"])),
            )  # fmt: skip
        out.print(history)
        for line in warm_start_lines(store, run, {row["ncode"] for row in evaluations}):
            out.print(line, markup=False, highlight=False)
        for status in ("failed", "infeasible"):
            rows = [r for r in evaluations if r["status"] == status]
            if rows:
                first = f"{rows[0]['ncode']}: {rows[0]['error']}"
                out.print(f"{len(rows)} {status} evaluation(s); first: {first}", markup=False, highlight=False)
        for line in (stopped_summary(evaluations), dropped_summary(decisions)):
            if line:
                out.print(line, markup=False, highlight=False)
        objectives = run_objectives(run)
        if len(objectives) > 1:
            caption, front = front_table(evaluations, objectives)
            out.print(caption, markup=False, highlight=False)
            out.print(front)
            pareto = write_plot(store, args.run_id, plot, args.db, kind="pareto")
            out.print(f"Pareto plot: {pareto}", markup=False, highlight=False)
        for fidelity in store.final_fidelities(args.run_id):
            metric = Metric(run["metric"], bool(run["maximize"]))
            out.print(final_table(final_scores(store, args.run_id, fidelity, metric), run["metric"], fidelity))
        if args.decisions:
            configs = {row["ncode"]: row["config"] for row in evaluations}
            out.print(decisions_table(decisions, args.decisions, bool(collm), configs))
        out.print(f"trajectory plot: {write_plot(store, args.run_id, plot, args.db)}", markup=False, highlight=False)
        curves = write_plot(store, args.run_id, plot, args.db, kind="curves")
        if curves is not None:
            out.print(f"learning curves: {curves}", markup=False, highlight=False)
    if saved is not None:
        write_text(saved, stored_run_file(run))
        out.print(f"run file: {saved} (python main.py --config {saved} repeats the run)", markup=False)
    return 0


def warm_start_lines(store: RunStore, run: dict[str, Any], evaluated: set[str]) -> list[str]:
    """What the run started from: known results (never counted, never its best) and configurations queued first."""
    lines = []
    known = store.warm_starts(run["run_id"], "known")
    if known:
        sources = ", ".join(sorted({row["source"] for row in known}))
        finished = [row for row in known if row["status"] == "ok" and row["score"] is not None]
        best = max(finished, key=lambda row: row["score"] if run["maximize"] else -row["score"], default=None)
        best_text = f"; best known {number(best['score'])} (NCode {best['ncode']})" if best else ""
        lines.append(f"warm start: {len(known)} known results from {sources}, read by the search but not counted in "
                     f"its budget or its best{best_text}")  # fmt: skip
    queued = store.warm_starts(run["run_id"], "queued")
    if queued:
        sources = Counter(row["source"] for row in queued)
        done = sum(row["ncode"] in evaluated for row in queued)
        listed = ", ".join(f"{source}: {count}" for source, count in sources.items())
        lines.append(f"queued first: {len(queued)} configurations ({listed}); {done} evaluated")
    return lines


def run_header(run: dict[str, Any], evaluations: list[dict[str, Any]], summary: dict[str, Any]) -> Table:
    """What the run searched and how, its best result (decoded), and how its ranker behaved."""
    header = Table(show_header=False, title=escape(f"run {run['run_id']} ({run['status']})"))
    method = search_method(run)
    header.add_row("task", run["task"])
    header.add_row("dataset", run["dataset"] or "-")
    header.add_row("ranker", method["ranker"])
    header.add_row("proposer", method["proposer"])
    header.add_row("evaluations", f"{run['n_evaluations']}/{run['budget']}")
    spent = sum(row["fidelity"] or 0 for row in evaluations)
    if spent:
        header.add_row("compute", f"{spent:g} steps (epochs) summed; {run['wall_s'] or 0:.1f} s wall")
    best = "-" if run["best_score"] is None else f"{number(run['best_score'])} (NCode {run['best_ncode']})"
    header.add_row(f"best {run['metric']} ({direction(run)})", best)
    for name, value in json.loads(run["final_metrics"] or "{}").items():
        header.add_row(f"  {name} of best", number(value))
    best_row = next((row for row in evaluations if row["ncode"] == run["best_ncode"]), None)
    if best_row is not None and isinstance(best_row["config"], dict) and best_row["config"]:
        decoded = "\n".join(f"{slot} = {number(value)}" for slot, value in best_row["config"].items())
        header.add_row("best configuration", escape(decoded))
    for name, value in summary.items():
        header.add_row(name.replace("_", " "), summary_value(name, value))
    if run["error"]:
        header.add_row("stopped by", escape(run["error"]))
    return header


def decisions_table(decisions: list[dict[str, Any]], count: int, collm: bool, configs: dict[str, Any]) -> Table | str:
    """The last ``count`` decisions: what the ranker was shown, what it picked (decoded from ``configs``, each
    evaluated NCode's configuration), and what it answered."""
    rows = decision_rows(decisions)[-count:]
    if not rows:
        where = "; a CoLLM-NAS run keeps its LLM calls instead (export --format json)" if collm else ""
        return f"no ranker decisions stored{where}"
    pool_title = "pool (grade)" if any(row["grades"] for row in rows) else "pool"
    table = Table(
        "iteration", "picked", "picked configuration", pool_title, "answer", title=f"last {len(rows)} decisions"
    )
    for row in rows:
        pool = []
        walked = {code for _, code in row["repaired"]}
        for code in row["pool"]:
            shown = f"{code}*" if code in walked else code
            if code in row["grades"]:
                grade = row["grades"][code]
                pool.append(
                    f"{shown} ({grade})" if grade is not None else f"{shown} ({shorten(row['answers'][code])!r})"
                )
            else:
                pool.append(shown)
        answer = shorten(row["raw_answer"]) if row["raw_answer"] else ("per candidate" if row["grades"] else "-")
        notes = (
            (["fallback: picked at random"] if row["fallback"] else [])
            + (["random start: picked at random"] if row["picked_by"] == RANDOM_START else [])
            + ([f"re-asked {row['retries']} time(s)"] if row["retries"] else [])
        )
        if row["dropped"]:
            notes.append(f"{len(row['dropped'])} drawn and dropped, known to break a constraint")
        if walked:
            notes.append(f"*: {len(walked)} walked inside the constraints from dropped draws")
        picked = "; ".join(decoded(configs.get(code)) for code in row["chosen"])
        table.add_row(
            str(row["iteration"]),
            " ".join(row["chosen"]),
            escape(picked),
            " ".join(pool),
            escape("; ".join([answer, *notes])),
        )
    return table


def shorten(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def stopped_summary(evaluations: list[dict[str, Any]]) -> str:
    """'12 evaluation(s) stopped early by the scheduler: 8 at step 1, 4 at step 3'; empty when none was."""
    at = Counter(r["fidelity"] for r in evaluations if r["status"] == "stopped")
    if not at:
        return ""
    ordered = sorted(at.items(), key=lambda item: item[0] or 0)
    where = ", ".join(f"{count} at step {step_text(step)}" for step, count in ordered)
    return f"{sum(at.values())} evaluation(s) stopped early by the scheduler: {where}"


def dropped_summary(decisions: list[dict[str, Any]]) -> str:
    """The configurations the pools drew and dropped before evaluation, known to break a constraint (never
    trained, so never in the history); empty when none was."""
    per_step = [pairs_of(decision, "dropped") for decision in decisions]
    dropped = [pair for step in per_step for pair in step]
    if not dropped:
        return ""
    code, reason = dropped[0]
    distinct = len({pair[0] for pair in dropped})
    steps = sum(bool(step) for step in per_step)
    walked = sum(len(pairs_of(decision, "repaired")) for decision in decisions)
    inside = f"; {walked} pool code(s) walked inside the constraints from them" if walked else ""
    return (f"{distinct} configuration(s) dropped before evaluation in {steps} step(s), known to break a "
            f"constraint; first: {code}: {reason}{inside}")  # fmt: skip


def front_table(evaluations: list[dict[str, Any]], objectives: list[Objective]) -> tuple[str, Table]:
    """The Pareto front of a run of several objectives, in a line and a table: each configuration decoded, with
    its objectives."""
    flags = front_flags(evaluations, objectives)
    front = [row for row, flag in zip(evaluations, flags, strict=True) if flag]
    infeasible = sum(row["status"] == "infeasible" for row in evaluations)
    caption = f"Pareto front: {len(front)} of {len(evaluations)} evaluations ({infeasible} infeasible, never on it)"
    table = Table("#", "NCode", *(o.spec() for o in objectives), "configuration")
    for place, row in enumerate(sorted(front, key=lambda r: -objectives[0].utility(r["objective_values"][0])), 1):
        table.add_row(str(place), row["ncode"], *map(number, row["objective_values"]), escape(decoded(row["config"])))
    return caption, table


def final_table(finals: list[FinalScore], metric: str, fidelity: float | None) -> Table:
    """The final stage's results, best mean first: the first row is the final pick."""
    length = "the search's length" if fidelity is None else f"fidelity {fidelity:g}"
    table = Table(
        "#", "NCode", f"search {metric}", "final mean", "sd", "seeds", "configuration",
        title=f"final stage ({length}): the pick is #1",
    )  # fmt: skip
    for place, result in enumerate(finals, start=1):
        seeds = f"{len(result.scores)}" + (f" ({result.failed} failed)" if result.failed else "")
        table.add_row(
            str(place), result.ncode, number(result.search_score), number(result.mean), number(result.sd), seeds,
            escape(decoded(result.config)),
        )  # fmt: skip
    return table


PLOTS = {"trajectory": ("", plot_trajectory), "curves": ("_curves", plot_curves), "pareto": ("_pareto", plot_pareto)}


def write_plot(store: RunStore, run_id: str, path: Path | None, db: str, kind: str = "trajectory") -> str | None:
    """A PNG of the run: its trajectory, its learning curves or its Pareto front (None when the run has none
    of those). A path the user gave must be written; the default one, next to the database, may not be
    writable (a database on a read-only disk), which leaves the rest of ``show`` standing."""
    suffix, plot = PLOTS[kind]
    target = path or Path(db).with_name(f"{safe_name(run_id)}.png")
    if suffix:
        target = target.with_name(f"{target.stem}{suffix}.png")
    try:
        written = plot(store, run_id, target)
        return None if written is None else str(written)
    except OSError as error:
        reason = error.strerror or str(error)
        if path is not None:
            raise UsageError(f"cannot write {path}: {reason}; pass a writable file path with --plot") from None
        return f"not written ({target}: {reason}); pass --plot PATH"


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
    out = output_file(args.out, f"{safe_name(args.run_id)}.{args.format}") if args.out else None
    with reading(args.db) as store:
        run = stored_run(store, args.run_id, args.db)
        text = stored_run_file(run) if args.format == "config" else export_run(store, args.run_id, args.format)
    if out is not None:
        write_text(out, text)
        console.print(f"wrote {out}", markup=False, highlight=False)
    else:
        sys.stdout.write(text)
    return 0


def run_compare(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python main.py compare",
        description="plot runs against each other: best so far per evaluation, and the regret to the task's "
        "optimum (log scale) when it is known",
    )
    parser.add_argument(
        "run_ids", nargs="+", metavar="RUN_ID", help="a run of --db, or DB:RUN_ID for a run of another database"
    )
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--out", help="PNG path (default: next to the first database)")
    parser.add_argument(
        "--optimum", type=float,
        help="the best score the task allows (default: read from the task's table for nb201, nas_bench_graph, "
        "table and nb_asr runs)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    out = output_file(args.out, "compare.png") if args.out else None
    wanted = [where_run(given, args.db) for given in dict.fromkeys(args.run_ids)]
    several = len({db for db, _ in wanted}) > 1
    runs, trajectories = [], []
    with ExitStack() as stack:
        stores = {db: stack.enter_context(reading(db)) for db in dict.fromkeys(db for db, _ in wanted)}
        for db, run_id in wanted:
            run = stored_run(stores[db], run_id, db)
            runs.append({**run, "label": f"{db}:{run_id}" if several else run_id})
            trajectories.append(best_so_far(list(stores[db].evaluations(run_id)), bool(run["maximize"])))
    goals = {(run["task"], run["dataset"], run["metric"], bool(run["maximize"])) for run in runs}
    if len(goals) > 1:
        described = ", ".join(f"{run['label']}: {task_label(run)} {run['metric']}" for run in runs)
        raise UsageError(f"the runs search different tasks ({described}); compare runs of one task and dataset")
    metric, maximize = runs[0]["metric"], bool(runs[0]["maximize"])
    optima = run_optima(runs, args.optimum)
    source = "(given with --optimum)" if args.optimum is not None else f"(the best score of task {task_label(runs[0])})"
    summary = Table("run", "task", "ranker", "evals", f"best {metric}", "regret", "optimum found at")
    summary.columns[0].overflow = "fold"  # never cut: it is what users copy
    curves, curve_optima = {}, {}
    for run, trajectory, optimum in zip(runs, trajectories, optima, strict=True):
        label = f"{run['label']} ({search_method(run)['ranker']})"
        curves[label] = trajectory
        gaps = regret(trajectory, optimum, maximize) if optimum is not None else []
        if gaps:
            curve_optima[label] = optimum
        found = next((str(n) for n, gap in enumerate(gaps, start=1) if gap == 0), "-" if gaps else "optimum unknown")
        summary.add_row(
            escape(run["label"]), task_label(run), search_method(run)["ranker"],
            str(len(trajectory)), number(trajectory[-1] if trajectory else None),
            number(gaps[-1] if gaps else None), found,
        )  # fmt: skip
    title = f"{len(runs)} run(s) of {task_label(runs[0])}: best {metric} so far per evaluation"
    if curve_optima:
        title += "; right: regret = |optimum - best so far| (log axis)"
    ids = [safe_name(run["run_id"]) for run in runs]
    name = "compare_" + ("_vs_".join(ids) if len("_vs_".join(ids)) <= 100 else f"{ids[0]}_and_{len(ids) - 1}_more")
    target = out or Path(wanted[0][0]).with_name(f"{name}.png")
    try:
        plot_comparison(curves, metric, maximize, curve_optima, target, title, source)
    except OSError as error:
        raise UsageError(f"cannot write {target}: {error.strerror or error}; pass a writable file with --out") from None
    stdout_console().print(summary)
    stdout_console().print(f"comparison plot: {target}", markup=False, highlight=False)
    return 0


def where_run(given: str, db: str) -> tuple[str, str]:
    """(database, run id) of a ``compare`` argument: DB:RUN_ID when the part before the first colon is a file
    (the README's examples write to several databases), else a run of ``--db`` (a run id may hold a colon)."""
    prefix, colon, run_id = given.partition(":")
    if colon and run_id and Path(prefix).is_file():
        return prefix, run_id
    return db, given


def run_optima(runs: list[dict[str, Any]], given: float | None) -> list[float | None]:
    """Each run's optimum: the one given, else its task table's best score (computed once per task); runs of
    tasks without a table have none. A given optimum the runs beat is refused: their regret would be negative."""
    if given is not None:
        for run in runs:
            best = run["best_score"]
            if best is not None and (best > given if run["maximize"] else best < given):
                raise UsageError(
                    f"--optimum {given} is {'below' if run['maximize'] else 'above'} the best score {number(best)} "
                    f"of run {run['run_id']} ({direction(run)}); pass the task's true optimum"
                )
        return [given] * len(runs)
    optima, by_task = [], {}
    for run in runs:
        config = SearchConfig.from_stored(run["config"])
        key = f"{config.task} {config.task_options()!r}"
        if key not in by_task:
            try:
                by_task[key] = table_optimum(config)
            except EvaluatorSetupError as error:
                console.print(f"optimum of {run['task']} unknown ({error}); pass --optimum", markup=False)
                by_task[key] = None
        optima.append(by_task[key])
    return optima
