"""Users' rankers the tests name by reference (``tests.agent.rankers:NAME``), as users' own modules are."""

from __future__ import annotations

from typing import Any

from agent import Decision, Ranker, RankRequest


class Smallest(Ranker):
    """Picks the pool's lexicographically smallest codes: a choice a test can check from the decisions table."""

    name = "smallest"

    def __init__(self) -> None:
        self.calls = 0
        self.closed = False

    def rank(self, request: RankRequest) -> Decision:
        self.calls += 1
        return Decision(chosen=sorted(request.pool)[: request.k], pool=request.pool)

    def close(self) -> None:
        self.closed = True


def make_smallest() -> Smallest:
    return Smallest()


def not_a_ranker() -> Any:
    return 3


def failing_to_build() -> Ranker:
    raise OSError("weights.pt not found")


class Breaking(Ranker):
    """Ranks well for three decisions, then breaks the contract in the way ``how`` names."""

    def __init__(self, how: str) -> None:
        self.how, self.calls = how, 0

    def rank(self, request: RankRequest) -> Any:
        self.calls += 1
        if self.calls <= 3:
            return Decision(chosen=request.pool[: request.k], pool=request.pool)
        if self.how == "raises":
            raise KeyError("slot 'depth'")
        if self.how == "list":
            return request.pool[: request.k]
        if self.how == "outside":
            return Decision(chosen=["9" * len(request.pool[0])])
        if self.how == "twice":
            return Decision(chosen=[request.pool[0]] * 2)
        return Decision(chosen=[])  # none where one was asked for


def raises() -> Breaking:
    return Breaking("raises")


def returns_a_list() -> Breaking:
    return Breaking("list")


def chooses_outside() -> Breaking:
    return Breaking("outside")


def chooses_twice() -> Breaking:
    return Breaking("twice")


def chooses_none() -> Breaking:
    return Breaking("none")
