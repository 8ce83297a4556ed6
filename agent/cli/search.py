"""``python main.py [flags]``: start or resume a search.

The flags are derived from :class:`agent.config.SearchConfig` (one flag per field, its help
and default from the field), so the CLI holds no defaults of its own. ``--config run.yaml``
reads the same options from a file; flags given as well win over the file.
"""

from __future__ import annotations

import argparse
import math
import time
import typing
from collections.abc import Collection, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from agent.cli.common import DEFAULT_DB, EXIT_INTERRUPTED, EXIT_STOPPED, UsageError, console, stdout_console
from agent.cli.runs import final_table
from agent.config import SearchConfig, flag, is_llm_ranker, read_run_file
from agent.driver import RunResult, Search, new_run_id
from agent.llm.ranker import effective_options, local_folder
from agent.loops.common import Progress as LoopProgress
from agent.runs.store import RunStore, open_connection
from agent.strategies.rankers import RankerStopped
from prompts.card import committee_members

GROUPS = {
    "task": "what to search",
    "search": "how to search",
    "fidelity": "multi-fidelity: stop poor trainings early (--scheduler), budgets in steps and seconds",
    "warm": "warm starts: results and configurations from before the run",
    "training": "training tasks (diffusion_lora, sam_lora, hat_mt); none given: tiny local defaults",
    "parallel": "parallel evaluation",
    "tracking": "experiment tracking",
    "llm": "LLM rankers (llm, openai:MODEL, local:PATH); API keys come from the environment",
    "collm": "CoLLM-NAS (--strategy collm); models and URLs default to --model/--base-url",
}
CLI_KEYS = ("db", "run_id", "quiet")  # options of the command, not of the run; a run file may set them too
RESUME_OVERRIDES = ("budget", "workers", "mlflow")  # what --resume may change about a stored run
LOG_WIDTH = 400  # columns of the progress line in a log: enough for long NCodes and counts
LOG_EVERY_S = 5.0  # in a log, the progress line at most this often (and after the last evaluation)


@dataclass
class SearchCommand:
    """A parsed command line: the run's config, the options given explicitly, and the command's own options."""

    config: SearchConfig
    given: dict[str, Any]  # config fields set by a flag or the run file
    db: Path
    run_id: str | None
    resume: str | None
    quiet: bool


def add_config_flags(
    parser: argparse.ArgumentParser, groups: Collection[str] | None = None, defaults: Mapping[str, Any] | None = None
) -> None:
    """One flag per SearchConfig field of ``groups`` (all when None), its help and default taken from the field.

    Shared by the search and bench commands so an option is declared once. A flag not given sets nothing
    (argparse.SUPPRESS): the caller sees what was given and the config's own default applies. ``defaults``
    replaces a field's default for one command (bench searches nb201 unless told otherwise).
    """
    defaults = defaults or {}
    hints = typing.get_type_hints(SearchConfig)
    sections: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(SearchConfig):
        if (groups is not None and f.metadata["group"] not in groups) or not f.metadata["cli"]:
            continue
        section = sections.get(f.metadata["group"]) or sections.setdefault(
            f.metadata["group"], parser.add_argument_group(GROUPS[f.metadata["group"]])
        )
        kinds = [kind for kind in typing.get_args(hints[f.name]) or (hints[f.name],) if kind is not type(None)]
        default = defaults.get(f.name, f.default if f.default is not MISSING else None)
        help_text = f.metadata["help"] + (f" (default {default})" if default not in (None, False, "") else "")
        given_default = defaults.get(f.name, argparse.SUPPRESS)
        if bool in kinds:
            section.add_argument(
                flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=given_default, help=help_text
            )
            continue
        repeatable = typing.get_origin(hints[f.name]) is list or f.name == "metric"  # a second --metric: an objective
        if repeatable:
            section.add_argument(
                flag(f.name), dest=f.name, action="append", default=given_default, help=help_text,
                metavar=flag(f.name)[2:].replace("-", "_").upper(),
            )  # fmt: skip
            continue
        kind = next((k for k in (int, float) if k in kinds), str)
        alone = {"nargs": "?", "const": f.metadata["const"]} if f.metadata["const"] is not None else {}
        section.add_argument(
            flag(f.name), dest=f.name, type=kind, choices=f.metadata["choices"] or None, default=given_default,
            help=help_text, metavar=flag(f.name)[2:].replace("-", "_").upper() if not f.metadata["choices"] else None,
            **alone,
        )  # fmt: skip


def search_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python main.py",
        description="LM-Searcher: architecture and configuration search with LLM rankers. Other commands: runs, "
        "show, export, compare, final, dashboard, mlflow, bench, finetune (python main.py COMMAND --help).",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="RUN.yaml", help="run file: any option below as a key; flags win over it")
    parser.add_argument("--db", help=f"run database, shared by many runs (default {DEFAULT_DB})")
    parser.add_argument("--run-id", help="name of the new run (default: task, time and a random suffix)")
    parser.add_argument("--resume", metavar="RUN_ID", help="continue an unfinished run where it stopped")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(parser)
    return parser


def parse_search(argv: list[str]) -> SearchCommand:
    """Defaults, then the run file, then the flags."""
    values = vars(search_parser().parse_args(argv))
    from_file = read_run_file(values.pop("config")) if "config" in values else {}
    command = {key: from_file.pop(key) for key in CLI_KEYS if key in from_file}
    command.update({key: values.pop(key) for key in CLI_KEYS if key in values})
    resume = values.pop("resume", None)
    given = {**from_file, **values}
    config = SearchConfig.from_mapping(given, source="run file" if from_file else "options")
    return SearchCommand(
        config, given, Path(command.get("db", DEFAULT_DB)), command.get("run_id"), resume, bool(command.get("quiet"))
    )


class ProgressDisplay:
    """A rich progress bar with best-so-far and ETA, fed by the record node.

    In a log (stderr not a terminal) a bar never redraws, so a whole plain line is printed instead, after each
    evaluation but at most every LOG_EVERY_S seconds, and after the last: an 80-column console would cut it
    with ellipses, so it is printed at LOG_WIDTH.
    """

    def __init__(self, quiet: bool) -> None:
        self.log = None if quiet or console.is_terminal else Console(stderr=True, width=LOG_WIDTH)
        self.logged_at = -math.inf
        self.unlogged: str | None = None  # the latest line, when it was not printed yet
        self.started: float | None = None  # when the first progress came
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"),
            TextColumn("{task.fields[counts]}"),
            TextColumn("| elapsed"),
            TimeElapsedColumn(),
            TextColumn("remaining"),
            TimeRemainingColumn(),
            console=console,
            disable=quiet or self.log is not None,
        )
        self.task_id = None

    def __enter__(self) -> ProgressDisplay:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)
        if self.log is not None and self.unlogged is not None:  # the run ended between two printed lines
            self.log.print(self.unlogged, markup=False, highlight=False, soft_wrap=True)

    def __call__(self, progress: LoopProgress) -> None:
        best = "-" if progress.best_score is None else f"{progress.best_score:.4g} ({progress.best_ncode})"
        counts = f"done {progress.evaluations} failed {progress.failed}"
        if progress.stopped:
            counts += f" stopped {progress.stopped}"
        if progress.fidelity_spent:
            counts += f" steps {progress.fidelity_spent:g}"
        if progress.last:
            counts += f" | last evaluation {progress.last[-1][1].cost_s:.2f} s"
        if progress.running or progress.queued:
            counts = f"running {progress.running} queued {progress.queued} {counts}"
        if self.log is not None:
            now = time.monotonic()
            self.started = self.started or now
            elapsed = now - self.started
            done = max(progress.evaluations, 1)
            left = elapsed / done * max(progress.budget - progress.evaluations, 0)
            times = f"| elapsed {clock(elapsed)} remaining {clock(left)}"
            self.unlogged = f"searching {progress.evaluations}/{progress.budget} best {best} {counts} {times}"
            if now - self.logged_at >= LOG_EVERY_S or progress.evaluations >= progress.budget:
                self.logged_at = now
                self.log.print(self.unlogged, markup=False, highlight=False, soft_wrap=True)
                self.unlogged = None
            return
        if self.task_id is None:
            self.task_id = self.bar.add_task("searching", total=progress.budget, best=best, counts=counts)
        self.bar.update(self.task_id, completed=progress.evaluations, best=best, counts=counts)


def clock(seconds: float) -> str:
    """0:01:05, as the progress bar writes elapsed and remaining time."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def print_summary(result: RunResult, db: Path, wall_s: float, held_before: int | None = None) -> None:
    """The run's outcome; ``held_before`` (a resumed run: the evaluations it held before this session) splits
    the counts and times into this session and the whole run."""
    run_metric = result.evaluator.metric
    resumed = held_before is not None
    table = Table(title=f"run {result.run_id}", show_header=False)
    table.add_row("task", f"{result.evaluator.describe()}")
    table.add_row("evaluations", str(result.evaluations) + _status_counts(result.statuses))
    if resumed:
        table.add_row("  this session", f"{result.evaluations - held_before} (resumed at {held_before})")
    if result.ended_early:
        table.add_row("ended early", result.ended_early)
    if result.fidelity_spent:
        table.add_row("compute", f"{result.fidelity_spent:g} steps (epochs) summed over all evaluations")
    objectives = result.evaluator.objectives
    if len(objectives) > 1:  # no one best: the front
        table.add_row("objectives", ", ".join(objective.spec() for objective in objectives))
        size = f"{result.front_size} configuration{'' if result.front_size == 1 else 's'}"
        table.add_row("Pareto front", f"{size} (python main.py show {result.run_id})")
    else:
        table.add_row("best NCode", str(result.best_ncode))
        table.add_row(f"best {run_metric.name}", "-" if result.best_score is None else f"{result.best_score:.4f}")
    for name, value in result.final_metrics.items():
        table.add_row(f"  {name} of best", f"{value:.4f}" if isinstance(value, float) else str(value))
    if result.costs_s:
        costs = sorted(result.costs_s)
        table.add_row("s per evaluation", f"median {costs[len(costs) // 2]:.3f}, max {costs[-1]:.3f}")
    if resumed:
        table.add_row("wall time", f"{wall_s:.1f} s this session, {result.wall_s:.1f} s over all sessions")
    else:
        table.add_row("wall time", f"{wall_s:.1f} s")
    for name, value in llm_ranker_rows(db, result.run_id):
        table.add_row(name, value)
    table.add_row("database", str(db))
    stdout_console().print(table)
    if result.finals:
        stdout_console().print(final_table(result.finals, run_metric.name, result.final_fidelity))
    print(f"inspect: python main.py show {result.run_id} --db {db}")


def _status_counts(statuses: dict[str, int]) -> str:
    """' (88 finished, 12 stopped early)': said only when not every evaluation finished."""
    if set(statuses) <= {"ok"}:
        return ""
    words = {"ok": "finished", "stopped": "stopped early"}
    return " (" + ", ".join(f"{count} {words.get(status, status)}" for status, count in statuses.items()) + ")"


def llm_ranker_rows(db: Path, run_id: str) -> list[tuple[str, str]]:
    """An LLM ranker's prompt settings and fallback rate: every fallback is a random pick, and a run of them
    is a random search that would otherwise pass for an LLM one. None for other rankers."""
    store = RunStore(open_connection(db, verify=False))  # verified when the search opened it
    try:
        config = SearchConfig.from_stored(store.get_run(run_id)["config"])
        if config.strategy != "lmsearcher" or not is_llm_ranker(config.ranker):
            return []
        decisions = store.decisions(run_id)
    finally:
        store.db.conn.close()
    options, guessed = effective_options(config.ranker, config.llm_options())
    weighting = f", slot weighting {options.slot_weighting:g}" if options.slot_weighting else ""
    settings = f"{options.prompt_format}, history cap {options.history_cap}{weighting}"
    settings += " (a guess: no --model-card)" * guessed
    if config.ranker.partition(":")[0] == "inprocess" and (members := committee_members(local_folder(config.ranker))):
        settings += f", a committee of {len(members) + 1} models"  # the card's members grade beside the model
    fallbacks = sum(row["fallback"] for row in decisions)
    rate = f"{fallbacks / len(decisions):.3f}" if decisions else "-"
    return [
        ("prompt format", settings),
        ("fallback rate", f"{rate} ({fallbacks} of {len(decisions)} decisions picked at random)"),
    ]


def resume_overrides(command: SearchCommand, stored: SearchConfig) -> dict[str, Any]:
    """What the flags change about a resumed run. A flag equal to the stored value changes nothing and is
    accepted; one that differs would be silently ignored, so it is refused, naming the stored value."""
    differing = [key for key in command.given if getattr(command.config, key) != getattr(stored, key)]
    refused = sorted(set(differing) - set(RESUME_OVERRIDES))
    if refused:
        stored_values = ", ".join(f"{flag(key)} {getattr(stored, key)!r}" for key in refused)
        raise UsageError(
            f"--resume continues a run with the options it was started with ({stored_values}); drop "
            f"{', '.join(map(flag, refused))} (only {', '.join(map(flag, RESUME_OVERRIDES))} may change), or start "
            "a new run"
        )
    return {key: getattr(command.config, key) for key in differing if key in RESUME_OVERRIDES}


def run_search(argv: list[str]) -> int:
    command = parse_search(argv)
    db = command.db
    run_id = command.resume or command.run_id or new_run_id(command.config)
    if not command.resume:
        command.config.check_new()  # before the database is opened: a refused run leaves no file behind
    search = Search(db)
    held_before = None
    try:
        if command.resume:
            overrides = resume_overrides(command, search.stored_config(run_id))
            held_before = search.store.get_run(run_id)["n_evaluations"]
        else:
            overrides = {}
    except BaseException:
        search.close()
        raise
    started = time.perf_counter()
    try:
        with ProgressDisplay(command.quiet) as display:
            if command.resume:
                result = search.resume(run_id, on_progress=display, **overrides)
            else:
                result = search.start(command.config, run_id=run_id, on_progress=display)
    except RankerStopped as error:
        console.print(
            f"[red]stopped:[/red] {error}. Everything so far is saved; once the ranker works again, "
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
    print_summary(result, db, time.perf_counter() - started, held_before)
    return 0


def resume_hint(run_id: str, db: Path) -> str:
    return f"python main.py --resume {run_id} --db {db}"
