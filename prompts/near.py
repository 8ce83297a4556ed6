"""The ``near`` prompt format: one candidate per prompt, its nearest history codes, graded 0-9.

Why: a model trained from scratch here learned to read one or two slots of a
``grade`` prompt but not to add up six (BENCHMARKS.md §4). This format does the
matching in code and leaves the model the weighing. Each shown history code is
one character naming its Hamming distance from the candidate and its grade,
``U+100000 + 10 * distance + grade``; the nearest ``cap`` codes are shown, nearest
first (ties: better first). A model reads them with one attention step.

The candidate's own code is not in the prompt: what its options are worth
differs from one space to the next, and a model that saw them learned the
training spaces' values, which do not carry over (BENCHMARKS.md §4).

Grades are one scale for every candidate of a decision: a code's grade is the
share of the other history codes it beats (ties count half), as one digit, 0-9
(9 = best). The training answer is the candidate's share of the history it beats.

The ranker asks once per candidate and picks the highest grade, as in ``grade``.

``slot_weighting`` (a prompt setting, 0 by default) makes the distance count each slot by how much it
matters in the history, as a GP's per-slot length scales do (``slot_weights``); a model reads what it was
trained with, so it is a setting of its card (BENCHMARKS.md §16 has what it bought).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Sequence

from prompts.choice import MAX_SLOTS, digit

NEAR_BASE = 0x100000  # Unicode's supplementary private-use area B
NEAR_CHARACTERS = "".join(chr(NEAR_BASE + index) for index in range((MAX_SLOTS + 1) * 10))


def distance(a: str, b: str, weights: Sequence[float] | None = None) -> int:
    """Slots where two codes of one space differ; with ``weights``, their weights' sum, rounded, and at least 1
    for different codes (distance 0 is a code's own)."""
    if weights is None:
        return sum(x != y for x, y in zip(a, b, strict=True))
    if a == b:
        return 0
    return max(1, round(sum(w for x, y, w in zip(a, b, weights, strict=True) if x != y)))


def slot_weights(graded: Sequence[tuple[str, int]], strength: float) -> list[float] | None:
    """Each slot's weight in ``distance``: ``1 - strength`` plus ``strength`` times the share of the history
    grades' variance its options explain (the correlation ratio, adjusted for its count of options as R² is),
    scaled so that the weights sum to the slots. None (plain Hamming distance) at strength 0, while the history
    holds fewer than twice as many codes as a per-slot additive model of it has free parameters (its shares
    would be noise: the weighting cost searches of 30 queries, BENCHMARKS.md §16), or when no slot explains
    anything."""
    if strength <= 0 or not graded:
        return None
    count, slots = len(graded), len(graded[0][0])
    by_slot: list[dict[str, list[int]]] = [{} for _ in range(slots)]
    for code, grade in graded:
        for slot, option in enumerate(code):
            by_slot[slot].setdefault(option, []).append(grade)
    if count < 2 * (1 + sum(len(by_option) - 1 for by_option in by_slot)):
        return None
    mean = statistics.fmean(grade for _, grade in graded)
    total = sum((grade - mean) ** 2 for _, grade in graded)
    if total == 0:
        return None
    explained = []
    for by_option in by_slot:
        options = len(by_option)
        between = sum(len(group) * (statistics.fmean(group) - mean) ** 2 for group in by_option.values())
        adjusted = 1 - (1 - between / total) * (count - 1) / (count - options) if 1 < options < count else 0.0
        explained.append(max(adjusted, 0.0))
    if sum(explained) == 0:
        return None
    scale = slots / sum(explained)
    return [1 - strength + strength * share * scale for share in explained]


def share_beaten(utility: float, others: Sequence[float]) -> float:
    """The share of ``others`` (sorted ascending) below ``utility``, ties counting half; 1.0 without others."""
    if not others:
        return 1.0
    below = bisect.bisect_left(others, utility)
    same = bisect.bisect_right(others, utility) - below
    return (below + 0.5 * same) / len(others)


def history_grades(utilities: Sequence[float]) -> list[int]:
    """Each history code's grade: the share of the other history codes it beats, as one digit."""
    ordered, others = sorted(utilities), len(utilities) - 1
    if not others:
        return [digit(1.0)]
    grades = []
    for utility in utilities:
        below = bisect.bisect_left(ordered, utility)
        same = bisect.bisect_right(ordered, utility) - below - 1  # itself excluded
        grades.append(digit((below + 0.5 * same) / others))
    return grades


def answer(utility: float, history_utilities: Sequence[float]) -> str:
    """The training answer: the share of the history the candidate beats, as one digit."""
    return str(digit(share_beaten(utility, sorted(history_utilities))))


def symbol(gap: int, grade: int) -> str:
    return chr(NEAR_BASE + 10 * min(gap, MAX_SLOTS) + grade)


def nearest(
    candidate: str, graded: Sequence[tuple[str, int]], cap: int, weights: Sequence[float] | None = None
) -> list[tuple[int, int]]:
    """``(distance, grade)`` of the ``cap`` history codes nearest ``candidate``, nearest first, better first
    among equals; distances past the last symbol share it, as in the prompt."""
    near = sorted((distance(candidate, code, weights), -grade) for code, grade in graded)[:cap]
    return [(min(gap, MAX_SLOTS), -negative) for gap, negative in near]


def nearest_items(
    candidate: str, graded: Sequence[tuple[str, int]], cap: int, weights: Sequence[float] | None = None
) -> str:
    """The prompt's history: ``nearest`` as symbols."""
    return "".join(symbol(gap, grade) for gap, grade in nearest(candidate, graded, cap, weights))


def unsymbol(text: str) -> list[tuple[int, int]]:
    """``(distance, grade)`` of each history symbol in a prompt (for checks and the reference)."""
    offsets = [ord(ch) - NEAR_BASE for ch in text if 0 <= ord(ch) - NEAR_BASE < len(NEAR_CHARACTERS)]
    return [divmod(offset, 10) for offset in offsets]


def reference_grade(items: Sequence[tuple[int, int]], decay: float = 2.0) -> float:
    """A classical reading of one prompt: grades averaged with weights ``exp(-decay * distance)``."""
    weights = [math.exp(-decay * gap) for gap, _ in items]
    return sum(w * grade for w, (_, grade) in zip(weights, items, strict=True)) / sum(weights)
