"""Task name -> evaluator. Each task knows its space, its metric and how to score a code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tools.evaluator import Evaluator, EvaluatorSetupError


@dataclass
class TaskOptions:
    """Options a task may use; each task reads only the ones it needs."""

    dataset: str | None = None
    data: str | None = None  # benchmark folder or results table
    space: str | None = None  # YAML space (--task table)
    metric: str | None = None  # metric column (--task table)
    minimize: bool = False
    seed: int = 0
    model_path: str | None = None  # diffusion_lora: SD-1.5 folder (diffusers layout); sam_lora: SamModel folder
    clip_path: str | None = None  # diffusion_lora: CLIPModel folder for CLIP-T / CLIP-I
    concept_dir: str | None = None  # diffusion_lora: concept images
    prompts: str | None = None  # diffusion_lora: validation prompts, one per line
    steps: int | None = None  # training steps (diffusion_lora) or batches (sam_lora) per evaluation
    device: str | None = None  # training tasks: cpu, cuda, cuda:N (default: cuda when present)
    eval_timeout: float | None = None  # training tasks: seconds per evaluation before it counts as failed
    latency_limit_ms: float | None = None  # hat_mt: slower sub-transformers are infeasible (default 500)
    hat_scale: int | None = None  # hat_mt: HAT's sizes divided by this (default 16; 1 = real HAT sizes)


def _nas_bench_graph(options: TaskOptions) -> Evaluator:
    from evaluators.nas_bench_graph import NasBenchGraphEvaluator

    return NasBenchGraphEvaluator(options.dataset or "cora")


def _nb201(options: TaskOptions) -> Evaluator:
    from evaluators.nb201 import NB201Evaluator

    return NB201Evaluator(options.dataset or "cifar10", options.data)


def _table(options: TaskOptions) -> Evaluator:
    from evaluators.table import TableEvaluator

    return TableEvaluator(options.space, options.data, options.metric, maximize=not options.minimize)


def _diffusion_lora(options: TaskOptions) -> Evaluator:
    from evaluators.diffusion_lora import DiffusionLoraEvaluator

    return DiffusionLoraEvaluator(
        options.model_path, options.clip_path, options.concept_dir, options.prompts, options.steps,
        options.device, options.eval_timeout, options.seed,
    )  # fmt: skip


def _sam_lora(options: TaskOptions) -> Evaluator:
    from evaluators.sam_lora import SamLoraEvaluator

    return SamLoraEvaluator(
        options.model_path, options.data, options.steps, options.device, options.eval_timeout, options.seed
    )


def _nb_asr(options: TaskOptions) -> Evaluator:
    from evaluators.nb_asr import NBASREvaluator

    return NBASREvaluator(options.data, options.dataset)


def _hat_mt(options: TaskOptions) -> Evaluator:
    from evaluators.hat_mt import HatMTEvaluator

    return HatMTEvaluator(
        options.data, options.model_path, options.latency_limit_ms, options.device, options.steps,
        options.eval_timeout, options.seed, options.hat_scale,
    )  # fmt: skip


TASKS: dict[str, Callable[[TaskOptions], Evaluator]] = {
    "nas_bench_graph": _nas_bench_graph,
    "nb201": _nb201,
    "table": _table,
    "diffusion_lora": _diffusion_lora,
    "sam_lora": _sam_lora,
    "nb_asr": _nb_asr,
    "hat_mt": _hat_mt,
}


def make_evaluator(task: str, options: TaskOptions) -> Evaluator:
    if task not in TASKS:
        raise EvaluatorSetupError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[task](options)
