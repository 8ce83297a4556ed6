"""Task name -> evaluator. Each task knows its space, its metric and how to score a code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from evaluators.base import Evaluator, EvaluatorSetupError


@dataclass
class TaskOptions:
    """Options a task may use; each task reads only the ones it needs."""

    dataset: str | None = None
    data: str | None = None  # benchmark folder or results table
    space: str | None = None  # YAML space (--task table)
    metric: str | None = None  # metric column (--task table)
    minimize: bool = False
    seed: int = 0


def _nas_bench_graph(options: TaskOptions) -> Evaluator:
    from evaluators.nas_bench_graph import NasBenchGraphEvaluator

    return NasBenchGraphEvaluator(options.dataset or "cora")


def _nb201(options: TaskOptions) -> Evaluator:
    from evaluators.nb201 import NB201Evaluator

    return NB201Evaluator(options.dataset or "cifar10", options.data)


def _table(options: TaskOptions) -> Evaluator:
    from evaluators.table import TableEvaluator

    return TableEvaluator(options.space, options.data, options.metric, maximize=not options.minimize)


TASKS: dict[str, Callable[[TaskOptions], Evaluator]] = {
    "nas_bench_graph": _nas_bench_graph,
    "nb201": _nb201,
    "table": _table,
}


def make_evaluator(task: str, options: TaskOptions) -> Evaluator:
    if task not in TASKS:
        raise EvaluatorSetupError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[task](options)
