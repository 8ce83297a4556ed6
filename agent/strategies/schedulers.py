"""Schedulers: what continues. The ranker decides what starts; at each intermediate report the run's
scheduler decides whether that evaluation goes on (the split of Syne Tune's searchers and schedulers).

All three are the *stopping* kind that Optuna's pruners, Ray Tune's ASHA and Syne Tune's default ASHA
are: an evaluation is never paused and resumed (that would need checkpoints of every training), it is
ended at a rung when it is not promising. A decision is a pure function of the reports recorded so
far (the run store's ``reports`` table), so a resumed run decides exactly as the uninterrupted one:
nothing about schedulers is kept anywhere else.

Values reach a scheduler as utilities (higher is better, whatever the metric's direction).
"""

from __future__ import annotations

import functools
import math
import random
import statistics
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

SCHEDULERS = ("none", "asha", "hyperband", "median")


@dataclass
class Board:
    """Every evaluation's reports as utilities, in the order they were made, and which evaluations finished."""

    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # ncode -> [(step, utility)]
    finished: Callable[[], set[str]] = set  # codes whose evaluation finished (status ok)

    def add(self, ncode: str, step: float, utility: float) -> None:
        self.curves.setdefault(ncode, []).append((step, utility))

    def forget(self, ncode: str) -> None:
        self.curves.pop(ncode, None)

    def value_at(self, ncode: str, rung: float) -> float | None:
        """An evaluation's value at a rung: its first report at or past it (ASHA's milestone value)."""
        return next((value for step, value in self.curves.get(ncode, []) if step >= rung), None)

    def latest_by(self, ncode: str, step: float) -> float | None:
        """An evaluation's last value reported at or before ``step``."""
        values = [value for s, value in self.curves.get(ncode, []) if s <= step]
        return values[-1] if values else None


class Scheduler(ABC):
    """Decides at each report whether an evaluation stops. Implementations are stateless between calls."""

    name: str

    @abstractmethod
    def should_stop(self, ncode: str, step: float, utility: float, board: Board) -> bool:
        """``board`` already holds this report as the last point of ``ncode``'s curve."""

    def rungs_of(self, ncode: str) -> list[float]:
        """The steps where this evaluation is judged (for reports and plots); [] when every step is."""
        return []


def geometric_rungs(first: float, last: float, reduction_factor: float) -> list[float]:
    """``first``, ``first * eta``, ... below ``last``: the milestones of successive halving."""
    rungs, rung = [], first
    while rung < last * (1 - 1e-9):
        rungs.append(rung)
        rung *= reduction_factor
    return rungs


def crossed_rung(curve: list[tuple[float, float]], rungs: Iterable[float]) -> float | None:
    """The highest rung the curve's last report reached and its previous report had not (None: none)."""
    step = curve[-1][0]
    before = curve[-2][0] if len(curve) > 1 else -math.inf
    passed = [rung for rung in rungs if before < rung <= step]
    return passed[-1] if passed else None


def halving_stops(ncode: str, board: Board, rungs: list[float], reduction_factor: float, peers: Iterable[str]) -> bool:
    """Successive halving at a rung, as Ray Tune's ASHA: stop unless the value is at least the
    (1 - 1/eta) quantile of the values that ``peers`` recorded at that rung before it."""
    curve = board.curves[ncode]
    rung = crossed_rung(curve, rungs)
    if rung is None:
        return False
    recorded = [v for peer in peers if peer != ncode and (v := board.value_at(peer, rung)) is not None]
    if not recorded:
        return False
    return curve[-1][1] < quantile(recorded, 1 - 1 / reduction_factor)


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), without numpy."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class ASHA(Scheduler):
    """Asynchronous successive halving (Li et al. 2020): rungs at min, min*eta, ... below max."""

    min_fidelity: float
    max_fidelity: float
    reduction_factor: float = 3.0
    name: str = "asha"

    def should_stop(self, ncode: str, step: float, utility: float, board: Board) -> bool:
        rungs = self.rungs_of(ncode)
        return halving_stops(ncode, board, rungs, self.reduction_factor, board.curves)

    def rungs_of(self, ncode: str) -> list[float]:
        return geometric_rungs(self.min_fidelity, self.max_fidelity, self.reduction_factor)


@dataclass
class Hyperband(Scheduler):
    """Asynchronous Hyperband: each evaluation is drawn into a bracket (its first rung min*eta^s), with
    Hyperband's bracket sizes as weights, and halved only against its own bracket. The draw is fixed by
    (seed, NCode), so a resumed run puts every evaluation in the same bracket."""

    min_fidelity: float
    max_fidelity: float
    reduction_factor: float = 3.0
    seed: int = 0
    name: str = "hyperband"

    def brackets(self) -> int:
        return max(1, len(geometric_rungs(self.min_fidelity, self.max_fidelity, self.reduction_factor)))

    def bracket_of(self, ncode: str) -> int:
        count = self.brackets()
        # Hyperband's n_s: the most aggressive bracket (s = 0) starts the most configurations
        weights = tuple(count / (count - s) * self.reduction_factor ** (count - 1 - s) for s in range(count))
        return drawn_bracket(self.seed, ncode, weights)

    def rungs_of(self, ncode: str) -> list[float]:
        first = self.min_fidelity * self.reduction_factor ** self.bracket_of(ncode)
        return geometric_rungs(first, self.max_fidelity, self.reduction_factor)

    def should_stop(self, ncode: str, step: float, utility: float, board: Board) -> bool:
        bracket = self.bracket_of(ncode)
        peers = [code for code in board.curves if self.bracket_of(code) == bracket]
        return halving_stops(ncode, board, self.rungs_of(ncode), self.reduction_factor, peers)


@functools.lru_cache(maxsize=1 << 16)
def drawn_bracket(seed: int, ncode: str, weights: tuple[float, ...]) -> int:
    """A code's Hyperband bracket, drawn with ``weights`` from (seed, code): cached, since every report compares
    a code with all the peers of its bracket."""
    return random.Random(f"{seed}/{ncode}/bracket").choices(range(len(weights)), weights)[0]


@dataclass
class Median(Scheduler):
    """Optuna's MedianPruner: once ``startup`` evaluations have finished, stop an evaluation whose value at a
    step (from ``min_fidelity`` on, before ``max_fidelity`` when known: the last step is the result, not a
    report to judge) is worse than the median of the finished ones' values at that step."""

    min_fidelity: float = 1.0
    startup: int = 5
    max_fidelity: float | None = None
    name: str = "median"

    def should_stop(self, ncode: str, step: float, utility: float, board: Board) -> bool:
        if step < self.min_fidelity or (self.max_fidelity is not None and step >= self.max_fidelity):
            return False
        finished = board.finished() - {ncode}
        if len(finished) < self.startup:
            return False
        values = [v for code in finished if (v := board.latest_by(code, step)) is not None]
        return len(values) >= self.startup and utility < statistics.median(values)


def make_scheduler(
    name: str, min_fidelity: float, max_fidelity: float | None, reduction_factor: float, seed: int
) -> Scheduler | None:
    """The scheduler of ``--scheduler``; None for ``none``. Raises ValueError naming what is missing."""
    if name == "none":
        return None
    if name == "median":
        return Median(min_fidelity, max_fidelity=max_fidelity)
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULERS)}")
    if max_fidelity is None:
        raise ValueError(
            f"--scheduler {name} needs --max-fidelity (the step a full evaluation ends at, e.g. its last epoch): "
            "this task does not declare one"
        )
    if name == "asha":
        return ASHA(min_fidelity, max_fidelity, reduction_factor)
    return Hyperband(min_fidelity, max_fidelity, reduction_factor, seed)
