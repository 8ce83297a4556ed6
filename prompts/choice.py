"""The ``choice`` prompt format, LM-Searcher-tiny's own.

Three departures from ``compact``, all for a small model trained from scratch:

- Each code symbol is one character that names its slot and its option, so
  "slot 3 is option 1" is recognisable in every code of the prompt and the
  model compares codes by matching tokens instead of counting positions. A
  plain symbol is a private-use code point, ``U+E000 + 16 * slot + option``
  (``tag``; codes the model writes itself).
- A history character also carries the code's score digit (``graded``,
  ``U+F0000``...), and a candidate character its label (``labelled``,
  ``U+100000``...). Reading a candidate's predicted score then takes two
  attention steps, both by content: each candidate character finds the history
  characters of the same slot and option, and the answer's label finds the
  characters that carry it. (Score and label tokens of their own, ``7:code,``
  and ``code=A;`` alone, left the tiny model at chance, BENCHMARKS.md §4.)
- The answer grades every candidate, label by label (``A7B3C9``), on the
  history's 0-9 scale. The ranker picks the highest grade, ties at random, so
  every candidate is a training signal and no code has to be copied.

History items are separated by commas, scores min-max normalised to one digit,
0-9 (9 = best). A capped history keeps the best half of the cap and spreads
the rest evenly over the remaining ranks (``spread``): the contrast between
good and poor codes is what says which options matter.
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
GRADE_BASE = 0xF0000  # start of supplementary private-use area A
GRADED_CHARACTERS = "".join(chr(GRADE_BASE + index) for index in range(MAX_SLOTS * MAX_OPTIONS * (TOP_SCORE + 1)))
LABEL_BASE = 0x100000  # start of supplementary private-use area B
LABELLED_CHARACTERS = "".join(chr(LABEL_BASE + index) for index in range(MAX_SLOTS * MAX_OPTIONS * len(LABELS)))


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


def graded(code: str, grade: int) -> str:
    """``code`` tagged, each character also carrying the code's score digit."""
    return "".join(chr(GRADE_BASE + (TOP_SCORE + 1) * (ord(ch) - TAG_BASE) + grade) for ch in tag(code))


def read_history(text: str) -> list[tuple[str, int]]:
    """(code, score digit) of each graded history item in ``text``, in order."""
    items = []
    for item in re.findall(f"[{chr(GRADE_BASE)}-{chr(GRADE_BASE + len(GRADED_CHARACTERS) - 1)}]+", text):
        offsets = [divmod(ord(ch) - GRADE_BASE, TOP_SCORE + 1) for ch in item]
        items.append(("".join(SYMBOLS[tagged % MAX_OPTIONS] for tagged, _ in offsets), offsets[0][1]))
    return items


def labelled(code: str, label: str) -> str:
    """``code`` tagged, each character also carrying the candidate's label."""
    return "".join(chr(LABEL_BASE + len(LABELS) * (ord(ch) - TAG_BASE) + LABELS.index(label)) for ch in tag(code))


def untag(text: str) -> str:
    """Tagged or labelled characters back to NCode symbols (slot order as written); others are dropped."""
    offsets = []
    for ch in text:
        if 0 <= ord(ch) - TAG_BASE < MAX_SLOTS * MAX_OPTIONS:
            offsets.append(ord(ch) - TAG_BASE)
        elif 0 <= ord(ch) - LABEL_BASE < len(LABELLED_CHARACTERS):
            offsets.append((ord(ch) - LABEL_BASE) // len(LABELS))
    return "".join(SYMBOLS[offset % MAX_OPTIONS] for offset in offsets)


def spread(best_first: Sequence[tuple[str, float]], cap: int) -> list[tuple[str, float]]:
    """At most ``cap`` items of a best-first list: the best half of the cap, the rest evenly spaced
    over the remaining ranks down to the worst."""
    if len(best_first) <= cap:
        return list(best_first)
    top = (cap + 1) // 2
    rest = best_first[top:]
    picks = cap - top
    step = (len(rest) - 1) / max(1, picks - 1)
    return [*best_first[:top], *(rest[len(rest) - 1 - round(i * step)] for i in reversed(range(picks)))]


def history_items(pairs: Sequence[tuple[str, float]], normalised: Sequence[float]) -> str:
    return "".join(f"{graded(code, digit(score))}," for (code, _), score in zip(pairs, normalised, strict=True))


def digit(normalised: float) -> int:
    """A [0, 1] score (clipped) as one digit, 0-9."""
    return int(TOP_SCORE * min(1.0, max(0.0, normalised)) + 0.5)  # halves round up


def candidate_items(candidates: Sequence[str]) -> str:
    if len(candidates) > len(LABELS):
        raise ValueError(f"the choice format labels at most {len(LABELS)} candidates, got {len(candidates)}")
    return "".join(f"{labelled(code, label)}={label};" for code, label in zip(candidates, LABELS, strict=False))


def answer(utilities: Sequence[float], shown: Sequence[float]) -> str:
    """The training answer: each label with its candidate's score on the history's 0-9 scale.

    ``shown``: the utilities of the history items in the prompt, whose range is the scale
    (scores outside it are clipped to 0 or 9)."""
    low, high = min(shown, default=0.0), max(shown, default=0.0)

    def scaled(utility: float) -> float:  # as ``prompts.render.normalise``: an all-equal history is all best
        return (utility - low) / (high - low) if high > low else float(utility >= low)

    return "".join(f"{label}{digit(scaled(u))}" for label, u in zip(LABELS, utilities, strict=False))


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
