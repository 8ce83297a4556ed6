"""Task name -> evaluator. Each task knows its space, its metric and how to score a code."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from evaluators.references import is_reference, resolve
from tools.evaluator import Evaluator, EvaluatorSetupError
from tools.extras import missing_extra
from tools.objectives import ObjectiveError, parse_constraint, parse_objective


@dataclass
class TaskOptions:
    """Options a task may use; each task reads only the ones it needs."""

    dataset: str | None = None
    data: str | None = None  # benchmark folder or results table
    space: str | dict | None = None  # YAML space path or inline definition (table, command, objective)
    metric: str | None = None  # metric column (--task table) or printed score (--task command)
    minimize: bool = False
    seed: int = 0
    model_path: str | None = None  # diffusion_lora: SD-1.5 folder (diffusers layout); sam_lora: SamModel folder
    clip_path: str | None = None  # diffusion_lora: CLIPModel folder for CLIP-T / CLIP-I
    concept_dir: str | None = None  # diffusion_lora: concept images
    prompts: str | None = None  # diffusion_lora: validation prompts, one per line
    steps: int | None = None  # training steps (diffusion_lora) or batches (sam_lora) per evaluation
    report_every: int | None = None  # LoRA tasks: score and report every N steps (for a scheduler)
    device: str | None = None  # training tasks: cpu, cuda, cuda:N (default: cuda when present)
    eval_timeout: float | None = None  # training tasks, command: seconds per evaluation before it counts as failed
    latency_limit_ms: float | None = None  # hat_mt: slower sub-transformers are infeasible (default 500)
    hat_scale: int | None = None  # hat_mt: HAT's sizes divided by this (default 16; 1 = real HAT sizes)
    command: str | None = None  # command: shell command template, e.g. "python train.py --depth {depth}"
    workdir: str | None = None  # command: folder of the per-NCode working folders (default runs/command-work/SPACE)
    gpus: str | None = None  # command: GPU ids shared out to the workers, comma-separated ("0,1")
    objective: str | Callable[[dict[str, Any]], Any] | None = None  # objective: module:function, or the function
    fidelity: float | None = None  # command ({fidelity}), objective (trial.fidelity): how long to train (epochs)
    objectives: list[str] = field(default_factory=list)  # objectives after the metric: NAME[:min|max]
    constraint: list[str] = field(default_factory=list)  # NAME<=NUMBER (or >=, <, >): others are infeasible
    # What is known of a code without evaluating it: a table's columns (params), or module:function references to
    # functions of the decoded configuration returning such metrics; constraints on them drop candidates early.
    known_before: list[str] = field(default_factory=list)
    evaluate_known_infeasible: bool = False  # evaluate candidates known to break a constraint (not drop them)


def _nas_bench_graph(options: TaskOptions) -> Evaluator:
    from evaluators.nas_bench_graph import NasBenchGraphEvaluator

    return NasBenchGraphEvaluator(options.dataset or "cora")


def _nb201(options: TaskOptions) -> Evaluator:
    from evaluators.nb201 import NB201Evaluator

    return NB201Evaluator(options.dataset or "cifar10", options.data)


def _table(options: TaskOptions) -> Evaluator:
    from evaluators.table import TableEvaluator

    columns = [name for name in options.known_before if not is_reference(name)]
    return TableEvaluator(options.space, options.data, options.metric, not options.minimize, columns)


def _diffusion_lora(options: TaskOptions) -> Evaluator:
    from evaluators.diffusion_lora import DiffusionLoraEvaluator

    return DiffusionLoraEvaluator(
        options.model_path, options.clip_path, options.concept_dir, options.prompts, options.steps,
        options.device, options.eval_timeout, options.seed, options.report_every,
    )  # fmt: skip


def _sam_lora(options: TaskOptions) -> Evaluator:
    from evaluators.sam_lora import SamLoraEvaluator

    return SamLoraEvaluator(
        options.model_path, options.data, options.steps, options.device, options.eval_timeout, options.seed,
        options.report_every,
    )  # fmt: skip


def _nb_asr(options: TaskOptions) -> Evaluator:
    from evaluators.nb_asr import NBASREvaluator

    return NBASREvaluator(options.data, options.dataset)


def _hat_mt(options: TaskOptions) -> Evaluator:
    from evaluators.hat_mt import HatMTEvaluator

    return HatMTEvaluator(
        options.data, options.model_path, options.latency_limit_ms, options.device, options.steps,
        options.eval_timeout, options.seed, options.hat_scale,
    )  # fmt: skip


def _command(options: TaskOptions) -> Evaluator:
    from evaluators.command import CommandEvaluator

    gpus = options.gpus.split(",") if options.gpus is not None else None
    return CommandEvaluator(
        options.space, options.command, options.metric, not options.minimize, options.eval_timeout,
        options.workdir, gpus, options.fidelity, options.seed, _names(options),
    )  # fmt: skip


def _names(options: TaskOptions) -> list[str]:
    """The metric names a run's other objectives and constraints read, which a command's lines must give."""
    try:
        return [parse_objective(t).name for t in options.objectives] + [
            parse_constraint(t).name for t in options.constraint
        ]
    except ObjectiveError as error:
        raise EvaluatorSetupError(str(error)) from None


def _objective(options: TaskOptions) -> Evaluator:
    from evaluators.objective import ObjectiveEvaluator

    return ObjectiveEvaluator(
        options.space, options.objective, options.metric, not options.minimize, options.eval_timeout,
        options.fidelity, options.seed,
    )  # fmt: skip


TASKS: dict[str, Callable[[TaskOptions], Evaluator]] = {
    "nas_bench_graph": _nas_bench_graph,
    "nb201": _nb201,
    "table": _table,
    "diffusion_lora": _diffusion_lora,
    "sam_lora": _sam_lora,
    "nb_asr": _nb_asr,
    "hat_mt": _hat_mt,
    "command": _command,
    "objective": _objective,
}
PLUGIN_GROUP = "lmsearcher.tasks"  # entry points naming Evaluator classes or factories of installed packages


TRAINING_MODULES = {  # what each training task imports from the 'training' extra (pyproject.toml)
    "diffusion_lora": ("diffusers", "peft"),
    "sam_lora": ("peft", "py_sod_metrics"),
    "hat_mt": ("sacrebleu",),
}


def make_evaluator(task: str, options: TaskOptions) -> Evaluator:
    """A built-in task, an installed plugin (entry point group ``lmsearcher.tasks``) or ``module:Class``; judged
    against the run's other objectives and constraints when it has any (evaluators.judged)."""
    problem = missing_extra("training", TRAINING_MODULES[task], f"--task {task}") if task in TRAINING_MODULES else None
    if problem:
        raise EvaluatorSetupError(problem)
    columns = [name for name in options.known_before if not is_reference(name)]
    if columns and task != "table":
        raise EvaluatorSetupError(
            f"--known-before {columns[0]} names a table column, which only --task table has; for --task {task} give "
            "a function of the configuration that returns the known metrics, as module:function"
        )
    evaluator = TASKS[task](options) if task in TASKS else _build_plugin(task, _plugin_factory(task), options)
    if not options.objectives and not options.constraint:
        return evaluator
    functions = [name for name in options.known_before if is_reference(name)]
    return judged(evaluator, options.objectives, options.constraint, functions, options.evaluate_known_infeasible)


def judged(
    evaluator: Evaluator, objective_specs: list[str], constraint_specs: list[str], known_before: Sequence[str] = (),
    evaluate_known_infeasible: bool = False,
) -> Evaluator:  # fmt: skip
    """``evaluator`` judged against further objectives (``NAME:min``) and constraints (``NAME<=NUMBER``);
    ``known_before``: module:function references of functions of the configuration returning metrics known
    without evaluating it; a candidate known to break a constraint is dropped unless ``evaluate_known_infeasible``."""
    from evaluators.judged import JudgedEvaluator

    try:
        objectives = [parse_objective(text) for text in objective_specs]
        constraints = [parse_constraint(text) for text in constraint_specs]
    except ObjectiveError as error:
        raise EvaluatorSetupError(str(error)) from None
    names = [evaluator.metric.name, *(o.name for o in objectives)]
    if len(set(names)) < len(names):
        raise EvaluatorSetupError(f"objectives {names} name one metric twice; give each objective once")
    functions = {reference: resolve(reference, "--known-before function") for reference in known_before}
    for reference, function in functions.items():
        if not callable(function):
            raise EvaluatorSetupError(f"--known-before {reference} is not a function of the configuration")
    return JudgedEvaluator(evaluator, objectives, constraints, functions, reject_early=not evaluate_known_infeasible)


def _plugin_factory(task: str) -> Any:
    plugins = {entry.name: entry for entry in entry_points(group=PLUGIN_GROUP)}
    if task in plugins:
        try:
            return plugins[task].load()
        except Exception as error:
            raise EvaluatorSetupError(f"plugin task {task!r} ({plugins[task].value}) failed to load: {error}") from None
    if is_reference(task):
        return resolve(task, "plugin task")
    names = [*TASKS, *plugins]
    raise EvaluatorSetupError(f"unknown task {task!r}; valid tasks: {', '.join(names)}, or your own as module:Class")


def _build_plugin(task: str, factory: Any, options: TaskOptions) -> Evaluator:
    """A plugin is an Evaluator subclass or a factory; it is called with the run's TaskOptions when it takes
    an argument, else with none."""
    if not callable(factory):
        raise EvaluatorSetupError(f"plugin task {task!r} is not a class or function")
    try:
        takes_options = any(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
            for p in inspect.signature(factory).parameters.values()
        )
    except (TypeError, ValueError):
        takes_options = False
    evaluator = factory(options) if takes_options else factory()
    if not isinstance(evaluator, Evaluator):
        raise EvaluatorSetupError(
            f"plugin task {task!r} made a {type(evaluator).__name__}, not an Evaluator (tools.evaluator.Evaluator: "
            "a space, a metric and evaluate(ncode) -> Outcome)"
        )
    return evaluator
