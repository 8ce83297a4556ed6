"""The CoLLM-NAS prompts (Navigator and Generator), rendered from the templates in this folder.

The task description is generated from the space's own definition (its
description, validity rule and each slot's name, options and description) and
from the metric, plus an optional target score and resource constraints, so any
space works without a hand-written prompt. The Navigator's system prompt starts
with :data:`NAVIGATOR_MARK` and the Generator's with :data:`GENERATOR_MARK`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prompts.render import template
from tools.evaluator import Metric
from tools.ncode import SYMBOLS, SearchSpace

NAVIGATOR_MARK = "You are the Navigator of CoLLM-NAS"
GENERATOR_MARK = "You are the Generator of CoLLM-NAS"
DIRECTION_WORDS = 150


def objective_text(metric: Metric) -> str:
    verb, better = ("maximise", "higher") if metric.maximize else ("minimise", "lower")
    described = f" ({metric.description})" if metric.description else ""
    return f"{verb} {metric.name}{described}; {better} is better"


def target_text(metric: Metric, target: float | None) -> str:
    if target is None:
        return ""
    return f"Target: {metric.name} {'>=' if metric.maximize else '<='} {target:g}; the search stops once it is reached."


def score_text(score: float | None) -> str:
    return "failed" if score is None else f"{score:.6g}"


def task_description(
    space: SearchSpace, metric: Metric, target: float | None = None, constraints: str | None = None
) -> str:
    """What the slots and options mean and what is optimised, from the space's definition."""
    lines = [f'Search space "{space.name}"' + (f": {space.description}" if space.description else "")]
    if space.rule.name != "none":
        lines.append(f"Validity rule: {space.rule.description}.")
    if space.members is not None:
        lines.append(f"Only {len(space.members)} codes exist in this space (a results table); others are rejected.")
    lines.append(
        f"An NCode has {space.length} symbols, one per slot below in this order; each symbol is the index of "
        "the chosen option (0-9, then a-z, then A-Z)."
    )
    lines.append("Slots:")
    for position, slot in enumerate(space.slots, start=1):
        options = ", ".join(f"{SYMBOLS[index]}={option}" for index, option in enumerate(slot.options))
        meaning = f" ({slot.description})" if slot.description else ""
        used = "; ".join(f"{parent} in {list(values)}" for parent, values in slot.when)
        condition = f" [used only when {used}; otherwise write 0]" if used else ""
        lines.append(f"{position}. {slot.name}{meaning}{condition}: {options}")
    lines.append(f"Objective: {objective_text(metric)}.")
    if target is not None:
        lines.append(target_text(metric, target))
    if constraints:
        lines.append(f"Resource constraints: {constraints.strip()}")
    return "\n".join(lines)


def navigator_start(task: str, budget: int, batch: int) -> list[dict[str, str]]:
    """The Navigator's system prompt and first question: the initial strategy."""
    system = template("collm_navigator_system").substitute(max_words=DIRECTION_WORDS).strip()
    user = template("collm_navigator_start").substitute(task=task, budget=budget, batch=batch).strip()
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def navigator_round(
    round_number: int,
    metric: Metric,
    results: Sequence[tuple[str, float | None, dict[str, Any]]],
    best: Sequence[tuple[str, float]],
    evaluated: int,
    budget: int,
    coordinator_note: str = "",
    target: float | None = None,
) -> dict[str, str]:
    """The user turn after a round: its results (code, score, decoded configuration) and the best so far."""
    result_lines = [
        f"{code} {score_text(score)} " + ", ".join(f"{name}={value}" for name, value in config.items())
        for code, score, config in results
    ]
    text = template("collm_navigator_round").substitute(
        round=round_number,
        metric=metric.name,
        results="\n".join(result_lines) or "(nothing was evaluated)",
        coordinator_note=coordinator_note,
        evaluated=evaluated,
        budget=budget,
        best="\n".join(f"{code} {score_text(score)}" for code, score in best) or "(no successful evaluation yet)",
        target_note=target_text(metric, target),
        next_round=round_number + 1,
    )
    return {"role": "user", "content": "\n".join(line for line in text.strip().splitlines() if line.strip())}


def generator_messages(
    task: str,
    length: int,
    metric: Metric,
    direction: str,
    n: int,
    best: Sequence[tuple[str, float]],
    evaluated: Sequence[str],
    evaluated_cap: int = 200,
) -> list[dict[str, str]]:
    """One stateless request: the direction in, ``n`` NCodes out."""
    system = template("collm_generator_system").substitute(task=task, n=n, length=length).strip()
    listed = " ".join(evaluated[-evaluated_cap:]) if evaluated else "(none yet)"
    if len(evaluated) > evaluated_cap:
        listed += f" (and {len(evaluated) - evaluated_cap} older ones)"
    user = template("collm_generator_request").substitute(
        direction=direction.strip() or "(no direction given: explore broadly)",
        metric=metric.name,
        best="\n".join(f"{code}: {score_text(score)}" for code, score in best) or "(none yet)",
        evaluated=listed,
        n=n,
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user.strip()}]
