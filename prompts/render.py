"""The one place where ranker prompts are rendered, for inference and for training data alike.

The formats:

- ``paper``: the paper's Table 1. An instruction, ``History:`` with one
  ``NCode: <code>, <metric>: <value>;`` line per evaluation, ``Candidate:`` with one
  code per line; the prompt is the user message.
- ``compact``: the released LM-Searcher model's format. History as ``code|score,``
  items sorted best first with scores min-max normalised to [0, 1] (4 decimals),
  candidates as ``code;`` items, the whole prompt in the system message.
- ``choice``: an earlier LM-Searcher-tiny format (``prompts.choice``): slot-tagged
  code characters, labelled candidates, answers as a grade per label; no space
  name or metric text, which a model trained from scratch cannot use.
- ``grade``: an LM-Searcher-tiny format (``prompts.grade``): one candidate per
  prompt, history symbols that carry their code's score, the answer one digit.
- ``near``: LM-Searcher-tiny's format (``prompts.near``): one candidate per
  prompt, its nearest history codes as (distance, grade) symbols (the candidate's
  own code is not shown), the answer one digit.

Minimised metrics (an error rate) are shown negated in the paper format and
normalised with 1 = lowest error in the compact one, so "higher is better"
always holds for the model; the prompt says what the number is.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from string import Template

from prompts import choice, grade, near
from tools.evaluator import Metric

PROMPT_DIR = Path(__file__).resolve().parent
FORMATS = ("paper", "compact", "choice", "grade", "near")
PER_CANDIDATE = ("grade", "near")  # one prompt per candidate, answered with a grade 0-9
TAGGED = ("choice", "grade", "near")  # codes written as slot-tagged characters (near: in generation prompts only)
RANKS_TAGGED = ("choice", "grade")  # ranking prompts that write codes, and so limit slots and options
DEFAULT_HISTORY_CAP = 200


@functools.cache
def template(name: str) -> Template:
    """A prompt template, read once (curation renders hundreds of thousands of prompts)."""
    return Template((PROMPT_DIR / f"{name}.txt").read_text())


def best_first(history: Sequence[tuple[str, float]], metric: Metric, cap: int) -> list[tuple[str, float]]:
    """(code, utility) pairs, best first, at most ``cap`` of them; utility is higher-is-better."""
    pairs = [(code, metric.utility(score)) for code, score in history]
    pairs.sort(key=lambda pair: -pair[1])
    return pairs[:cap]


def normalise(values: list[float]) -> list[float]:
    """Min-max to [0, 1]; all-equal values become 1.0 (each is the best seen)."""
    if not values:
        return []
    low, high = min(values), max(values)
    return [1.0] * len(values) if high == low else [(value - low) / (high - low) for value in values]


def metric_text(metric: Metric) -> str:
    name = metric.name if metric.maximize else f"negative {metric.name} (lower {metric.name} is better)"
    return f"{name}: {metric.description}" if metric.description else name


def grade_history(history: Sequence[tuple[str, float]], metric: Metric, cap: int) -> list[tuple[str, float]]:
    """The ``grade`` format's shown history: (code, utility) pairs, best first, spread down to the worst."""
    return grade.spread(best_first(history, metric, len(history)), cap)


def grade_items(shown: Sequence[tuple[str, float]]) -> str:
    """The ``grade`` format's history items from ``grade_history`` pairs, scores as digits 0-9."""
    return grade.history_items(shown, normalise([value for _, value in shown]))


def choice_history(pairs: Sequence[tuple[str, float]]) -> str:
    """The ``choice`` format's history items from ``best_first`` pairs, scores as digits 0-9."""
    return choice.history_items(pairs, normalise([value for _, value in pairs]))


def render(
    fmt: str,
    space_name: str,
    slots: int,
    metric: Metric,
    history: Sequence[tuple[str, float]],
    candidates: Sequence[str],
    history_cap: int = DEFAULT_HISTORY_CAP,
) -> list[dict[str, str]]:
    """Chat messages asking for the best of ``candidates`` given scored ``history``."""
    pairs = best_first(history, metric, history_cap)
    if fmt == "paper":
        lines = [f"NCode: {code}, {metric.name}: {value:.4f};" for code, value in pairs]
        text = template("paper").substitute(
            space=space_name,
            metric_text=metric_text(metric),
            history="\n".join(lines),
            candidates="\n".join(candidates),
        )
        return [{"role": "user", "content": text.strip()}]
    if fmt == "compact":
        scores = normalise([value for _, value in pairs])
        items = "".join(f"{code}|{score:.4f}," for (code, _), score in zip(pairs, scores, strict=True))
        text = template("compact").substitute(
            space=space_name,
            slots=slots,
            metric_text=metric_text(metric),
            history=items,
            candidates="".join(f"{code};" for code in candidates),
        )
        return system(text)
    if fmt == "choice":
        text = template("choice").substitute(
            slots=slots,
            history=choice_history(pairs),
            candidates=choice.candidate_items(candidates),
        )
        return system(text)
    if fmt in PER_CANDIDATE:
        if len(candidates) != 1:
            raise ValueError(f"the {fmt} format asks about one candidate per prompt, got {len(candidates)}")
        return render_each(fmt, slots, metric, history, candidates, history_cap)[0]
    raise ValueError(f"unknown prompt format {fmt!r}; valid: {', '.join(FORMATS)}")


def system(text: str) -> list[dict[str, str]]:
    """A prompt as a lone system message, as every format but ``paper`` is asked."""
    return [{"role": "system", "content": text.strip()}]


def render_each(
    fmt: str,
    slots: int,
    metric: Metric,
    history: Sequence[tuple[str, float]],
    candidates: Sequence[str],
    history_cap: int = DEFAULT_HISTORY_CAP,
    slot_weighting: float = 0.0,
) -> list[list[dict[str, str]]]:
    """One prompt per candidate in a ``PER_CANDIDATE`` format; what the candidates share is encoded once.

    ``near``: the whole history is graded once, and each candidate is shown its nearest codes (by distances
    that weigh slots by what they explain of the grades, with ``slot_weighting`` above 0: ``near.slot_weights``).
    ``grade``: the capped history is encoded once, and each prompt adds the candidate's code.
    """
    if fmt == "near":
        utilities = [metric.utility(score) for _, score in history]
        graded = list(zip((code for code, _ in history), near.history_grades(utilities), strict=True))
        weights = near.slot_weights(graded, slot_weighting)

        def fill(code: str) -> dict[str, str]:
            return {"history": near.nearest_items(code, graded, history_cap, weights)}
    else:
        items = grade_items(grade_history(history, metric, history_cap))

        def fill(code: str) -> dict[str, str]:
            return {"history": items, "candidate": choice.tag(code)}

    prompt = template(fmt)
    return [system(prompt.substitute(slots=slots, **fill(code))) for code in candidates]


def render_generation(
    fmt: str, space_name: str, slots: int, metric: Metric, history: Sequence[tuple[str, float]], history_cap: int
) -> list[dict[str, str]]:
    """The paper's ablation: ask for a new code instead of a choice among candidates.

    The ``choice`` and ``grade`` formats have their own short templates (``near``, which has no
    candidate to measure distances from, uses ``grade``'s); the others use the compact style.
    """
    if fmt in PER_CANDIDATE:
        items = grade_items(grade_history(history, metric, history_cap))
        text = template("grade_generate").substitute(slots=slots, history=items)
        return system(text)
    pairs = best_first(history, metric, history_cap)
    if fmt == "choice":
        text = template("choice_generate").substitute(slots=slots, history=choice_history(pairs))
        return system(text)
    scores = normalise([value for _, value in pairs])
    items = "".join(f"{code}|{score:.4f}," for (code, _), score in zip(pairs, scores, strict=True))
    text = template("generate").substitute(
        space=space_name, slots=slots, metric_text=metric_text(metric), history=items
    )
    return system(text)
