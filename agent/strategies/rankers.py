"""Rankers pick the k most promising candidates of a pool, given the history.

Contract: ``rank(request)`` returns a :class:`Decision` whose ``chosen`` holds
``request.k`` distinct codes taken from ``request.pool`` (fewer only when the
pool is smaller). A ranker that cannot decide falls back to a documented choice
and says so with ``fallback=True``; it raises only when the run must stop (a
server that stays down), and then the run resumes later from its checkpoint.
"""

from __future__ import annotations

import random
import statistics
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

from agent.runs.store import Observation
from prompts import near
from tools.evaluator import Metric
from tools.ncode import SearchSpace


@dataclass
class RankRequest:
    space: SearchSpace
    metric: Metric
    history: Sequence[Observation]
    pool: list[str]
    k: int
    rng: random.Random
    repool: Callable[[], list[str]] | None = None  # a fresh pool, for rankers that re-ask


@dataclass
class Decision:
    chosen: list[str]
    pool: list[str] = field(default_factory=list)  # the pool finally ranked (a re-ask may replace it)
    raw_answer: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    retries: int = 0
    fallback: bool = False
    error: str | None = None
    picked_by: str | None = None  # who picked, when not the ranker itself (a random start): recorded instead


class RankerStopped(RuntimeError):
    """The ranker cannot go on (its server stays down, or a user's ranker raised or broke the contract above).
    The run stops with every evaluation saved and resumes once the ranker works again."""


class Ranker(ABC):
    name: str
    # whether it reads the one number a run of several objectives shows per step (agent.strategies.scalarisations)
    reads_scalarisation: ClassVar[bool] = True

    @abstractmethod
    def rank(self, request: RankRequest) -> Decision: ...

    def close(self) -> None:
        """Release what the ranker holds (a server process, connections)."""
        return None


class FirstRanker(Ranker):
    """Keeps the proposer's order: the ranker of proposer-driven baselines (evolution, TPE).
    ``name`` is the baseline's, so each recorded decision names what the user chose."""

    reads_scalarisation = False

    def __init__(self, name: str = "first") -> None:
        self.name = name

    def rank(self, request: RankRequest) -> Decision:
        return Decision(chosen=request.pool[: request.k], pool=request.pool)


class RandomRanker(Ranker):
    """A uniform pick: with a random pool this is random search."""

    name = "random"
    reads_scalarisation = False

    def rank(self, request: RankRequest) -> Decision:
        chosen = request.rng.sample(request.pool, min(request.k, len(request.pool)))
        return Decision(chosen=chosen, pool=request.pool)


RANDOM_START = "random start"  # what a random start's picks are recorded as picked by


class RandomStart(Ranker):
    """Picks at random until ``scored`` evaluations have a score, then lets ``inner`` decide: the startup
    trials of Optuna's samplers, for any ranker that picks from a pool. A ranker reads its history, and in
    a search's first steps there is little to read; a spread start is something to read. Its random picks
    are recorded as the random start's, so that no one reads them as the ranker's judgement."""

    def __init__(self, inner: Ranker, scored: int) -> None:
        self.inner, self.scored = inner, scored
        self.name = inner.name
        self.reads_scalarisation = inner.reads_scalarisation

    def rank(self, request: RankRequest) -> Decision:
        if sum(o.score is not None for o in request.history) < self.scored:
            return replace(RandomRanker().rank(request), picked_by=RANDOM_START)
        return self.inner.rank(request)

    def close(self) -> None:
        self.inner.close()


def additive_predictions(scored: Sequence[tuple[str, float]], codes: Sequence[str]) -> list[float]:
    """Each code's predicted utility under a per-slot additive model of ``scored`` (code, utility) pairs:
    the mean, over its slots, of the mean utility of the scored codes sharing that slot's option.
    An option no scored code has counts as the overall mean (0 without history)."""
    overall = statistics.fmean(utility for _, utility in scored) if scored else 0.0
    by_option: dict[tuple[int, str], list[float]] = {}
    for code, utility in scored:
        for slot, symbol in enumerate(code):
            by_option.setdefault((slot, symbol), []).append(utility)
    means = {key: statistics.fmean(values) for key, values in by_option.items()}
    return [statistics.fmean(means.get((slot, symbol), overall) for slot, symbol in enumerate(code)) for code in codes]


NEAREST_CAP = 24  # history codes a nearest reader weighs by default: as many as LM-Searcher-tiny's prompt shows


def nearest_predictions(
    scored: Sequence[tuple[str, float]], codes: Sequence[str], cap: int = NEAREST_CAP, rounded: bool = True
) -> list[float]:
    """Each code's grade as a classical reader of its ``near`` prompt would give it: the ``cap`` nearest
    scored codes' grades (``prompts.near``), weighted ``exp(-2 * distance)``; rounded to a digit, as a
    greedy answer is, or kept fractional, as an expected grade is."""
    graded = list(zip((code for code, _ in scored), near.history_grades([u for _, u in scored]), strict=True))
    grades = [near.reference_grade(near.nearest(code, graded, cap)) for code in codes]
    return [float(int(grade + 0.5)) for grade in grades] if rounded else grades


def pick_highest(request: RankRequest, predicted: Sequence[float]) -> Decision:
    """The ``request.k`` codes predicted highest, ties in random order."""
    keyed = {code: (score, request.rng.random()) for code, score in zip(request.pool, predicted, strict=True)}
    chosen = sorted(request.pool, key=keyed.__getitem__, reverse=True)[: request.k]
    return Decision(chosen=chosen, pool=request.pool)


class SurrogateRanker(Ranker):
    """Ranks by a classical model's ``predictions`` of the pool from the scored history; ties go to a
    random one, and with no scored history the pick is random."""

    @abstractmethod
    def predictions(self, scored: Sequence[tuple[str, float]], pool: Sequence[str]) -> Sequence[float]: ...

    def rank(self, request: RankRequest) -> Decision:
        scored = [(o.ncode, request.metric.utility(o.score)) for o in request.history if o.score is not None]
        if not scored:
            return RandomRanker().rank(request)
        return pick_highest(request, self.predictions(scored, request.pool))


class AdditiveRanker(SurrogateRanker):
    """Ranks by ``additive_predictions`` over the whole history.

    Why: the classical counterpart of what the ``grade`` prompt asks an LLM to read off its
    history (BENCHMARKS.md §4 uses it as the reference a ranker of that kind could reach).
    """

    name = "additive"

    def predictions(self, scored: Sequence[tuple[str, float]], pool: Sequence[str]) -> Sequence[float]:
        return additive_predictions(scored, pool)


class NearestRanker(SurrogateRanker):
    """Ranks by ``nearest_predictions`` of the ``cap`` nearest history codes.

    Why: the classical counterpart of what the ``near`` prompt asks an LLM to read (the grades of a
    candidate's nearest history codes), the reference for LM-Searcher-tiny in BENCHMARKS.md §4.
    ``nearest`` rounds its grades to digits, as a model's greedy answer is; ``nearest-mean`` keeps them
    fractional, as the default ranker's expected grades are, so it is that ranker's classical reader.
    """

    def __init__(self, cap: int | None = None, rounded: bool = True) -> None:
        self.cap = cap or NEAREST_CAP
        self.rounded = rounded
        self.name = "nearest" if rounded else "nearest-mean"

    def predictions(self, scored: Sequence[tuple[str, float]], pool: Sequence[str]) -> Sequence[float]:
        return nearest_predictions(scored, pool, self.cap, self.rounded)
