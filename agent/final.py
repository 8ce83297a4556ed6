"""The proxy-then-final protocol of the paper: search on a short proxy (one epoch, 1,000 steps), then train the
best few configurations again at full length, several seeds each, and pick the one with the best mean.

A final evaluation is one configuration trained with one seed at one fidelity, through the task's own
evaluator built with that seed and length (``Evaluator.fidelity_option``: ``{fidelity}``/``trial.fidelity``
for commands and objectives, ``--steps`` for the LoRA tasks). Each is stored (table ``finals``) as soon as
it ends, so a killed final stage continues where it stopped: nothing is trained twice. Its results never
enter the search's history or its best: they answer a different question (how good is the pick at full
length, and how much does a seed move it).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.config import SearchConfig
from agent.loops.common import ranked
from agent.runs.store import RunStore
from evaluators.registry import TaskOptions, make_evaluator
from tools.evaluator import Evaluator, EvaluatorSetupError, Metric
from tools.evaluator_tool import run_evaluation


class FinalStageError(EvaluatorSetupError):
    """A final stage that cannot run (a task that cannot train again, nothing finished to train)."""


@dataclass(frozen=True)
class FinalPlan:
    """How many of the best to train again, how long (None: as long as the search did) and with how many seeds."""

    top: int
    fidelity: float | None = None
    seeds: int = 3

    def seeds_of(self, run_seed: int) -> list[int]:
        """Seeds other than the search's own: a repeat with the search's seed would repeat its result."""
        return [run_seed + 1 + i for i in range(self.seeds)]


@dataclass(frozen=True)
class FinalScore:
    """One configuration trained again: its search score and its final scores, one per seed that finished."""

    ncode: str
    config: dict[str, Any]
    search_score: float | None
    scores: tuple[float, ...]
    failed: int  # seeds whose training failed

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.scores) if self.scores else None

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.scores) if len(self.scores) > 1 else None


def plan_of(config: SearchConfig) -> FinalPlan | None:
    """The final stage a run asked for with ``--final-top``; None when it asked for none."""
    if not config.final_top:
        return None
    return FinalPlan(config.final_top, config.final_fidelity, config.final_seeds)


def run_final(
    store: RunStore,
    run_id: str,
    config: SearchConfig,
    plan: FinalPlan,
    objective: Callable[[dict[str, Any]], Any] | None = None,
    on_result: Callable[[str, int, Any], None] | None = None,
) -> list[FinalScore]:
    """Train the run's best ``plan.top`` finished configurations with each of ``plan.seeds`` seeds, skipping those
    stored by an earlier, interrupted final stage; the results, best mean first."""
    options = config.task_options()
    if objective is not None:
        options.objective = objective
    probe = make_evaluator(config.task, options)
    if probe.fidelity_option is None:
        raise FinalStageError(
            f"task {config.task!r} cannot train a configuration again (its scores are looked up or fixed); the "
            "final stage needs a task that trains: command, objective, diffusion_lora or sam_lora"
        )
    top = best_finished(store, run_id, probe.metric, plan.top)
    if not top:
        raise FinalStageError(f"run {run_id!r} has no finished evaluation to train again")
    done = {(row["ncode"], row["seed"]) for row in store.finals(run_id, plan.fidelity)}
    for seed in plan.seeds_of(config.seed):
        evaluator: Evaluator | None = None  # built once per seed, only when something is left to train
        for ncode in top:
            if (ncode, seed) in done:
                continue
            evaluator = evaluator or make_evaluator(config.task, final_options(options, probe, plan.fidelity, seed))
            outcome = run_evaluation(evaluator, ncode)
            store.add_final(run_id, ncode, seed, plan.fidelity, outcome)
            if on_result is not None:
                on_result(ncode, seed, outcome)
    return final_scores(store, run_id, plan.fidelity, probe.metric)


def final_options(options: TaskOptions, evaluator: Evaluator, fidelity: float | None, seed: int) -> TaskOptions:
    """The task's options for one final repeat: its seed, and its length when the plan gives one."""
    changed: dict[str, Any] = {"seed": seed}
    if fidelity is not None:
        name = evaluator.fidelity_option
        changed[name] = int(fidelity) if name == "steps" else fidelity
    return dataclasses.replace(options, **changed)


def best_finished(store: RunStore, run_id: str, metric: Metric, top: int) -> list[str]:
    """The run's ``top`` best finished evaluations (never a stopped or failed one), best first."""
    return [o.ncode for o in ranked([o for _, o in store.observations(run_id)], metric)[:top]]


def final_scores(store: RunStore, run_id: str, fidelity: float | None, metric: Metric) -> list[FinalScore]:
    """What the final stage at ``fidelity`` holds, per configuration, best mean first (the pick is the first)."""
    rows = store.finals(run_id, fidelity)
    evaluations = {row["ncode"]: row for row in store.evaluations(run_id)}
    scores: dict[str, list[float]] = {}
    failed: dict[str, int] = {}
    for row in rows:
        scores.setdefault(row["ncode"], [])
        if row["status"] == "ok" and row["score"] is not None and math.isfinite(row["score"]):
            scores[row["ncode"]].append(row["score"])
        else:
            failed[row["ncode"]] = failed.get(row["ncode"], 0) + 1
    results = []
    for ncode, values in scores.items():
        searched = evaluations[ncode]
        results.append(FinalScore(ncode, searched["config"], searched["score"], tuple(values), failed.get(ncode, 0)))
    return sorted(results, key=lambda r: math.inf if r.mean is None else -metric.utility(r.mean))
