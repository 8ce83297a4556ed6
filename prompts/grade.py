"""The ``grade`` prompt format, LM-Searcher-tiny's own: one candidate per prompt, graded 0-9.

A model trained from scratch learns this task where it never learned to compare
ten candidates at once (BENCHMARKS.md §4): the answer is one number, the
candidate's expected score, read off the history by matching symbols.

- Each history code is written with characters that carry its score: one
  private-use character per symbol naming (slot, option, score digit),
  ``U+F0000 + 10 * (16 * slot + option) + digit``. A candidate symbol finds the
  history codes that share its option, and their scores, in one attention step.
- The candidate is written with the slot-tagged characters of ``prompts.choice``
  (``U+E000 + 16 * slot + option``): the same (slot, option), no score.
- History scores are min-max normalised to one digit, 0-9 (9 = best), over the
  shown history; the answer is the candidate's score on that scale, clipped.
- A long history is shown as its best half plus codes spread evenly over the rest
  down to the worst, so the prompt shows what scores badly as well as well.

The ranker asks once per candidate and picks the highest grade.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence

from prompts.choice import MAX_OPTIONS, MAX_SLOTS, TAG_BASE, digit, tag
from tools.ncode import SYMBOLS

SCORED_BASE = 0xF0000  # Unicode's supplementary private-use area A
SCORED_CHARACTERS = "".join(chr(SCORED_BASE + index) for index in range(MAX_SLOTS * MAX_OPTIONS * 10))


def scored(code: str, grade: int) -> str:
    """One character per symbol naming (slot, option, grade)."""
    return "".join(chr(SCORED_BASE + 10 * (ord(ch) - TAG_BASE) + grade) for ch in tag(code))


def unscored(text: str) -> list[tuple[str, int]]:
    """``(code, grade)`` for each comma-separated run of scored characters (for checks and baselines)."""
    items = []
    for run in text.split(","):
        offsets = [ord(ch) - SCORED_BASE for ch in run if 0 <= ord(ch) - SCORED_BASE < len(SCORED_CHARACTERS)]
        if offsets:
            code = "".join(SYMBOLS[(offset // 10) % MAX_OPTIONS] for offset in offsets)
            items.append((code, offsets[0] % 10))
    return items


def spread(pairs: Sequence[tuple[str, float]], cap: int) -> list[tuple[str, float]]:
    """At most ``cap`` of best-first ``pairs``: the best half of the cap, then evenly spaced down to the worst."""
    if len(pairs) <= cap:
        return list(pairs)
    top = cap - cap // 2
    rest = pairs[top:]
    wanted = cap - top
    picks = [round(i * (len(rest) - 1) / max(1, wanted - 1)) for i in range(wanted)]
    return [*pairs[:top], *(rest[i] for i in sorted(set(picks)))]


def history_items(pairs: Sequence[tuple[str, float]], normalised: Sequence[float]) -> str:
    return "".join(f"{scored(code, digit(score))}," for (code, _), score in zip(pairs, normalised, strict=True))


def answer(utility: float, shown: Sequence[float]) -> str:
    """The training answer: ``utility`` on the shown history's 0-9 scale, clipped."""
    low, high = min(shown), max(shown)
    return str(digit(1.0 if high == low else (utility - low) / (high - low)))


def highest(grades: Mapping[str, int], rng: random.Random) -> str:
    """The code graded highest; ties go to a random one of them (the first would favour the pool's order)."""
    top = max(grades.values())
    return rng.choice([code for code, grade in grades.items() if grade == top])


def parse_grade(text: str) -> int | None:
    """The first digit of an answer, or None."""
    found = re.search(r"[0-9]", text)
    return int(found.group()) if found else None
