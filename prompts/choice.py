"""The ``choice`` prompt format, LM-Searcher-tiny's own.

Two departures from ``compact``, both for a small model trained from scratch:

- Each NCode symbol is written as one character that names its slot and its
  option (a private-use code point, ``U+E000 + 16 * slot + option``), so
  "slot 3 is option 1" is the same token in every code of the prompt and the
  model compares codes by matching tokens instead of counting positions.
- Candidates carry one-letter labels (``<code>=A;``) and the answer grades
  every candidate, label by label (``A7B3C9``): its place among the candidates
  as one digit, 0 = worst, 9 = best. The ranker picks the highest grade. Each
  grade is a per-candidate lookup (the label's code, its tokens' matches in the
  history) rather than a copy of a code or an argmax over the pool, and every
  candidate is a training signal (answering with labels best first stayed at
  chance, BENCHMARKS.md). Grading by place, not by score, keeps the targets
  spread over 0-9 however the history is capped.

History items are ``score:code,`` (score first, so each code token can see its
score), best first, scores min-max normalised to one digit, 0-9 (9 = best).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from string import ascii_uppercase

from tools.ncode import SYMBOLS

LABELS = ascii_uppercase
TOP_SCORE = 9
TAG_BASE = 0xE000  # start of Unicode's private-use area
MAX_SLOTS = 64
MAX_OPTIONS = 16
TAGGED_CHARACTERS = "".join(chr(TAG_BASE + index) for index in range(MAX_SLOTS * MAX_OPTIONS))


def unsupported(slots: int, options: int, pool_size: int) -> str | None:
    """Why a space or pool cannot be written in this format (None: it can)."""
    if slots > MAX_SLOTS or options > MAX_OPTIONS:
        return (
            f"the choice prompt format writes at most {MAX_SLOTS} slots of at most {MAX_OPTIONS} options "
            f"(this space: {slots} slots, up to {options} options); use --prompt-format compact"
        )
    if pool_size > len(LABELS):
        return (
            f"the choice prompt format labels at most {len(LABELS)} candidates; use --pool-size {len(LABELS)} or less"
        )
    return None


def tag(code: str) -> str:
    """One private-use character per symbol, naming (slot, option)."""
    if len(code) > MAX_SLOTS:
        raise ValueError(f"the choice format writes codes of at most {MAX_SLOTS} slots, got {len(code)}")
    options = [SYMBOLS.index(symbol) for symbol in code]
    if max(options, default=0) >= MAX_OPTIONS:
        raise ValueError(f"the choice format writes options 0-{MAX_OPTIONS - 1} only: {code!r}")
    return "".join(chr(TAG_BASE + MAX_OPTIONS * slot + option) for slot, option in enumerate(options))


def untag(text: str) -> str:
    """Tagged characters back to NCode symbols (slot order as written); other characters are dropped."""
    offsets = [ord(ch) - TAG_BASE for ch in text if 0 <= ord(ch) - TAG_BASE < MAX_SLOTS * MAX_OPTIONS]
    return "".join(SYMBOLS[offset % MAX_OPTIONS] for offset in offsets)


def history_items(pairs: Sequence[tuple[str, float]], normalised: Sequence[float]) -> str:
    return "".join(f"{digit(score)}:{tag(code)}," for (code, _), score in zip(pairs, normalised, strict=True))


def digit(normalised: float) -> int:
    """A [0, 1] score (clipped) as one digit, 0-9."""
    return int(TOP_SCORE * min(1.0, max(0.0, normalised)) + 0.5)  # halves round up


def candidate_items(candidates: Sequence[str]) -> str:
    if len(candidates) > len(LABELS):
        raise ValueError(f"the choice format labels at most {len(LABELS)} candidates, got {len(candidates)}")
    return "".join(f"{tag(code)}={label};" for code, label in zip(candidates, LABELS, strict=False))


def answer(utilities: Sequence[float]) -> str:
    """The training answer: each label with its candidate's place among the candidates, 0-9 (ties share one)."""
    not_worse = [sum(other <= utility for other in utilities) - 1 for utility in utilities]  # others it ties or beats
    places = [count / max(1, len(utilities) - 1) for count in not_worse]
    return "".join(f"{label}{digit(place)}" for label, place in zip(LABELS, places, strict=False))


def parse_pick(text: str, candidates: Sequence[str], rng: random.Random) -> str | None:
    """The candidate graded highest in an answer, or None when no grade parses.

    Ties go to a random one of them: taking the first would favour whatever the
    pool puts first (the random half of a mixed pool) whenever a model grades
    alike. Labels outside the pool are ignored; a label graded twice keeps its first grade.
    """
    grades: dict[int, int] = {}
    for label, grade in re.findall(r"([A-Z])\s*[:=]?\s*([0-9])", text):
        index = LABELS.index(label)
        if index < len(candidates):
            grades.setdefault(index, int(grade))
    if not grades:
        return None
    top = max(grades.values())
    return candidates[rng.choice(sorted(index for index, grade in grades.items() if grade == top))]
