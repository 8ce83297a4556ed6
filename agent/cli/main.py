"""Command line: ``python main.py [search flags]`` and the ``runs``, ``show``, ``export``, ``compare``,
``final``, ``dashboard``, ``mlflow``, ``bench`` and ``finetune`` commands. A thin client of the library: each
command parses, calls it, and prints.

Exit codes: 0 done; 2 bad input (one line says what and how to fix it);
3 the run stopped on an outside failure and can be resumed; 130 interrupted
(resumable as well).
"""

from __future__ import annotations

import sys

from rich.markup import escape

from agent.cli.common import EXIT_BAD_INPUT, UsageError, console
from agent.config import ConfigError
from agent.driver import SearchError
from agent.llm.ranker import RankerSetupError
from agent.runs.mlflow_tracking import TrackingError
from agent.runs.store import StoreError
from tools.evaluator import EvaluatorSetupError


def run_finetune(argv: list[str]) -> int:
    from finetune.cli import main as finetune_main  # torch and transformers load only when needed

    return finetune_main(argv)


def run_bench(argv: list[str]) -> int:
    from agent.cli.bench import main as bench_main

    return bench_main(argv)


def main(argv: list[str] | None = None) -> int:
    from agent.cli.dashboard import run_dashboard
    from agent.cli.final import run_final_command
    from agent.cli.mlflow_sync import run_mlflow
    from agent.cli.runs import run_compare, run_export, run_list, run_show
    from agent.cli.search import run_search

    argv = sys.argv[1:] if argv is None else argv
    handlers = {
        "runs": run_list,
        "show": run_show,
        "export": run_export,
        "compare": run_compare,
        "bench": run_bench,
        "finetune": run_finetune,
        "dashboard": run_dashboard,
        "final": run_final_command,
        "mlflow": run_mlflow,
    }
    handler = handlers.get(argv[0]) if argv else None
    try:
        return handler(argv[1:]) if handler else run_search(argv)
    except (
        SearchError,
        EvaluatorSetupError,
        StoreError,
        UsageError,
        RankerSetupError,
        ConfigError,
        TrackingError,
    ) as error:
        console.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
