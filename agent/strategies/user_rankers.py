"""Users' own rankers: a ``module:name`` reference (``--ranker my_rankers:Mine``) or, from Python, an instance.

Why a wrapper: a user's ranker is code this project has never run, so :class:`UserRanker` holds it to the
ranker contract at every step. If it raises, returns something other than a :class:`Decision`, or picks a
code outside the pool, the run stops with :class:`RankerStopped`: every evaluation is saved, and the
message names the ranker and what it did, so the run resumes once the ranker is fixed.
"""

from __future__ import annotations

from typing import Any

from agent.strategies.rankers import Decision, Ranker, RankerStopped, RankRequest
from evaluators.references import is_reference, resolve
from tools.evaluator import EvaluatorSetupError

OBJECT_PREFIX = "object:"  # a run whose ranker was a Python object; only Python can give it again


def is_user_ranker(spec: str) -> bool:
    """Whether ``spec`` names a user's ranker: a ``module:name`` reference or a run's stored ``object:Class``."""
    return spec.startswith(OBJECT_PREFIX) or is_reference(spec)


def object_spec(ranker: Ranker) -> str:
    """What a run stores for a ranker given as an object: its class, to name it in messages and listings."""
    return f"{OBJECT_PREFIX}{type(ranker).__qualname__}"


class RankerNotFound(ValueError):
    """A ``module:name`` that names nothing importable: a misspelt built-in ranker, or a user's module not found."""


class UserRanker(Ranker):
    """A user's ranker, checked against the contract of :class:`Ranker` at every decision. ``owned``: built
    from a reference here, so closed here; an object the user passed in stays theirs to close."""

    def __init__(self, inner: Ranker, label: str, owned: bool = True) -> None:
        if not isinstance(inner, Ranker):
            raise ValueError(
                f"ranker {label} is a {type(inner).__name__}, not a Ranker: subclass "
                "agent.strategies.rankers.Ranker and implement rank(request) -> Decision"
            )
        self.inner, self.label, self.owned = inner, label, owned
        self.name = getattr(inner, "name", None) or type(inner).__name__

    def rank(self, request: RankRequest) -> Decision:
        try:
            decision = self.inner.rank(request)
        except Exception as error:
            raise RankerStopped(f"ranker {self.label} raised {type(error).__name__}: {error}") from error
        problem = contract_breach(decision, request)
        if problem:
            raise RankerStopped(f"ranker {self.label} {problem}")
        return decision

    def close(self) -> None:
        if self.owned:
            self.inner.close()


def contract_breach(decision: Any, request: RankRequest) -> str | None:
    """What is wrong with a ranker's answer, or None: ``request.k`` distinct codes (fewer only from a smaller
    pool) out of the pool it ranked."""
    if not isinstance(decision, Decision):
        return f"returned a {type(decision).__name__}, not a Decision(chosen=[...codes of request.pool])"
    pool = decision.pool or request.pool
    outside = [code for code in decision.chosen if code not in pool]
    if outside:
        return f"chose {outside[0]!r}, which is not in the pool it was given; pick codes of request.pool"
    if len(set(decision.chosen)) != len(decision.chosen):
        return f"chose the same code twice: {decision.chosen}"
    wanted = min(request.k, len(pool))
    if len(decision.chosen) != wanted:
        return f"chose {len(decision.chosen)} codes where {wanted} were asked for (request.k)"
    return None


def load_user_ranker(spec: str) -> UserRanker:
    """The ranker a ``module:name`` reference builds: ``name`` is a Ranker subclass or a function returning a
    Ranker, called without arguments. ``object:Class`` (a run started with a Python object) is refused with
    how to give it again."""
    if spec.startswith(OBJECT_PREFIX):
        raise ValueError(
            f"this run's ranker was a Python object ({spec.removeprefix(OBJECT_PREFIX)}); resume it from Python: "
            "Study.load(db, run_id, ranker=YourRanker(...)).optimize()"
        )
    try:
        factory = resolve(spec, "ranker")
    except EvaluatorSetupError as error:
        raise RankerNotFound(str(error)) from None
    if not callable(factory):
        raise ValueError(f"ranker {spec} is a {type(factory).__name__}; name a Ranker class or a function making one")
    try:
        built = factory()
    except Exception as error:
        raise ValueError(f"ranker {spec} failed to build: {type(error).__name__}: {error}") from None
    return UserRanker(built, spec)
