"""What every search loop does alike, whatever its graph: read the run's history from the store,
draw random numbers fixed by (seed, step, purpose), evaluate a step's picks once, and end a
step by updating the run's row and reporting :class:`Progress`. The loop modules keep only
their own nodes and edges.

The parts dataclasses (``LoopParts``, ``AsyncParts``, ``CollmParts``) take the methods below
as mixins rather than as a base dataclass, so that their constructor fields, and their
order, stay their own.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.runs.store import Observation, RunStore
from agent.strategies.proposers import ProposalContext, Proposer, known_feasible, repaired_pool
from agent.strategies.rankers import Decision, Ranker, RankRequest
from agent.strategies.scalarisations import scalarised_view
from tools.evaluator import UNREPORTED, Evaluator, EvaluatorSetupError, Metric, Outcome
from tools.ncode import SearchSpace, decode
from tools.objectives import Constraint, Objective, broken_where_known

NEVER_REPORTED_AFTER = 3  # evaluations of a session, all lacking a value the run needs, before the run stops
FEASIBLE_DRAWS = 20  # pools' worth of codes drawn at most to fill one with codes that keep what is known before
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reading:
    """What proposers and rankers read of the history (a run's --stopped-as, --infeasible-as and
    --scalarisation): a stopped evaluation and an infeasible one (:func:`searcher_view`), several objectives
    (agent.strategies.scalarisations)."""

    stopped_as: str = "last"
    infeasible_as: str = "worst"
    scalarisation: str = "auto"


@dataclass
class Progress:
    """What a loop reports after each step."""

    evaluations: int
    budget: int
    best_ncode: str | None
    best_score: float | None
    last: list[tuple[str, Outcome]]
    running: int = 0  # evaluations on a worker now (parallel searches)
    queued: int = 0  # evaluations waiting for a free worker
    failed: int = 0  # recorded evaluations that failed or were infeasible
    stopped: int = 0  # recorded evaluations the scheduler ended early
    fidelity_spent: float = 0.0  # steps (epochs ...) of every recorded evaluation, summed


class Histories:
    """Each run's evaluations, read incrementally from the store (which stays the source of truth):
    a node re-reads only the rows added since it last looked."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.rows: dict[str, list[Observation]] = {}
        self.last_ids: dict[str, int] = {}

    def __call__(self, run_id: str) -> list[Observation]:
        rows = self.rows.setdefault(run_id, [])
        for row_id, observation in self.store.observations(run_id, self.last_ids.get(run_id, 0)):
            rows.append(observation)
            self.last_ids[run_id] = row_id
        return rows


def best_of(history: Sequence[Observation], metric: Metric) -> Observation | None:
    """The first of the best finished evaluations (never a stopped or infeasible one); None before any."""
    ok = [o for o in history if o.status == "ok" and o.score is not None]
    return max(ok, key=lambda o: metric.utility(o.score)) if ok else None


def ranked(history: Sequence[Observation], metric: Metric) -> list[Observation]:
    """Finished evaluations (not stopped early, not infeasible), best first; of equal scores, the first recorded."""
    finished = (o for o in history if o.status == "ok" and o.score is not None)
    return sorted(finished, key=lambda o: -metric.utility(o.score))


def searcher_view(
    history: Sequence[Observation], metric: Metric, stopped_as: str, infeasible_as: str = "worst"
) -> list[Observation]:
    """The history as proposers and rankers read it. A stopped evaluation's score is a value at a low
    fidelity: ``last`` shows it as it is, ``worst`` as the worst finished score (or its own when lower),
    ``omit`` without a score (still never proposed again); BENCHMARKS.md compares the three. An infeasible
    result reads as the worst finished score, however good its own, or with ``infeasible_as="omit"`` without a
    score (Optuna's samplers read its true values and a broken constraint instead: ``Observation.values``)."""
    infeasible = any(o.status == "infeasible" and o.score is not None for o in history)
    if not infeasible and (stopped_as == "last" or not any(o.status == "stopped" for o in history)):
        return list(history)
    finished = [o.score for o in history if o.status == "ok" and o.score is not None]
    worst = min(finished, key=metric.utility) if finished else None
    view = []
    for o in history:
        if o.status == "infeasible" and o.score is not None:  # its values are kept, but it must not look good
            o = replace(o, score=worst if infeasible_as == "worst" else None)
        elif o.status == "stopped" and stopped_as != "last":
            if stopped_as == "omit" or worst is None:
                o = replace(o, score=None)
            elif o.score is None or metric.utility(worst) < metric.utility(o.score):
                o = replace(o, score=worst)
        view.append(o)
    return view


@dataclass
class Limits:
    """What ends a search besides its count of evaluations: steps (epochs ...) and wall seconds spent."""

    fidelity: float | None = None  # --fidelity-budget
    seconds: float | None = None  # --time-budget
    max_fidelity: float | None = None  # what a finished evaluation that reported no step cost
    wall_before: float = 0.0  # seconds the run's earlier sessions spent
    started: float = field(default_factory=time.monotonic)

    def wall_spent(self) -> float:
        return self.wall_before + time.monotonic() - self.started

    def fidelity_spent(self, history: Sequence[Observation]) -> float:
        """A stopped or finished evaluation cost the steps it reached; a failure before any report, none."""
        unknown = self.max_fidelity or 0.0
        return sum(o.fidelity if o.fidelity is not None else unknown * (o.status == "ok") for o in history)

    def spent(self, history: Sequence[Observation]) -> bool:
        return (self.fidelity is not None and self.fidelity_spent(history) >= self.fidelity) or (
            self.seconds is not None and self.wall_spent() >= self.seconds
        )


def results_of(history: Sequence[Observation], codes: Iterable[str]) -> list[tuple[str, Observation]]:
    """(code, observation) of the evaluations of ``codes``, in the order recorded: a step's last results."""
    picked = set(codes)
    return [(o.ncode, o) for o in history if o.ncode in picked]


def evaluate_new(
    store: RunStore,
    space: SearchSpace,
    run_id: str,
    iteration: int,
    chosen: list[str],
    evaluate: Callable[[str], Outcome],
    evaluate_many: Callable[[list[str]], Iterable[tuple[str, Outcome]]] | None = None,
) -> None:
    """Evaluate and record a step's picks, skipping those recorded before a crash (never evaluated twice).
    ``evaluate_many`` runs several at once, yielding each as it finishes; None: one after another."""
    todo = {code: p for p, code in enumerate(chosen) if not store.has_evaluation(run_id, code)}
    if evaluate_many is not None and len(todo) > 1:
        results = evaluate_many(list(todo))
    else:
        results = ((code, evaluate(code)) for code in todo)
    for code, outcome in results:
        store.add_evaluation(run_id, iteration, todo[code], code, decode(space, code), outcome)


def target_reached(best: Observation | None, metric: Metric, target: float | None) -> bool:
    """Whether the best score so far is at least as good as ``target`` (in the metric's direction)."""
    return target is not None and best is not None and metric.utility(best.score) >= metric.utility(target)


def step_end_nodes(parts: Any, observations: Histories, evaluate_many: Any = None) -> tuple[Any, Any]:
    """The ``evaluate`` and ``record`` nodes that end a synchronous step (LM-Searcher and CoLLM-NAS alike):
    evaluate the state's ``chosen`` codes once, then record the step and decide whether to go on.
    ``parts`` is a LoopParts or CollmParts: a LoopScaffold with an ``evaluate`` tool."""

    session = time.time()

    def evaluate(state: dict) -> dict:
        space, run_id, iteration = parts.evaluator.space, state["run_id"], state["iteration"]
        evaluate_new(parts.store, space, run_id, iteration, state["chosen"], parts.evaluate, evaluate_many)
        return {}

    def record(state: dict) -> dict:
        history = observations(state["run_id"])
        parts.record_step(state["run_id"], history, results_of(history, state["chosen"]))
        never_reported(parts.store, state["run_id"], history, session)
        return {"iteration": state["iteration"] + 1, "done": parts.finished(history)}

    return evaluate, record


def never_reported(store: RunStore, run_id: str, history: Sequence[Observation], session: float) -> None:
    """Stop a run whose evaluations all ended without a value it needs (a script that never prints an objective),
    once ``NEVER_REPORTED_AFTER`` of this session's did: every later one would fail alike, each a whole training.
    Counting this session's only, a resume after the task was fixed goes on; the failed ones stay recorded."""
    if len(history) < NEVER_REPORTED_AFTER or any(o.status != "failed" for o in history):
        return
    rows = [row for row in store.evaluations(run_id) if row["created_at"] >= session]
    if len(rows) >= NEVER_REPORTED_AFTER and all(UNREPORTED in (row["error"] or "") for row in rows):
        said = rows[-1]["error"].splitlines()[0].split(";")[0].rstrip(".:")  # what is missing, without a log's tail
        raise EvaluatorSetupError(
            f"the {len(rows)} evaluations of this session all ended without a value the run needs, and every one "
            f"would: {said}. Make the task report it, then resume (--resume {run_id}, or Study.load and optimize): "
            f"the {len(history)} failed evaluations stay recorded."
        )


class LoopScaffold:
    """Mixin of every loop's parts; the dataclass declares the fields it uses."""

    store: RunStore
    evaluator: Evaluator
    budget: int
    seed: int
    on_progress: Callable[[Progress], None] | None
    target: float | None  # stop once the best score reaches it (--target); None: spend the budget
    limits: Limits  # budgets in steps and seconds

    def finished(self, history: Sequence[Observation]) -> bool:
        """A budget is spent or the target reached: start no new evaluation."""
        metric = self.evaluator.metric
        if len(history) >= self.budget or self.limits.spent(history):
            return True
        return target_reached(best_of(history, metric), metric, self.target)

    def rng(self, iteration: int, purpose: str) -> random.Random:
        """A generator fixed by (seed, step, purpose): a re-run node draws the same numbers."""
        return random.Random(f"{self.seed}/{iteration}/{purpose}")

    def record_step(
        self,
        run_id: str,
        history: list[Observation],
        last: Iterable[tuple[str, Observation | Outcome]],
        running: int = 0,
        queued: int = 0,
    ) -> Observation | None:
        """The common end of a step: update the run's row and report progress. Returns the best evaluation."""
        best = best_of(history, self.evaluator.metric)
        self.store.prune_checkpoints(run_id)
        best_ncode, best_score = (best.ncode, best.score) if best else (None, None)
        self.store.update_run(
            run_id, n_evaluations=len(history), best_ncode=best_ncode, best_score=best_score,
            wall_s=self.limits.wall_spent(),
        )  # fmt: skip
        if self.on_progress:
            brief = [(code, Outcome(r.score, status=r.status, cost_s=r.cost_s)) for code, r in last]
            failed = sum(o.status in ("failed", "infeasible") for o in history)
            stopped = sum(o.status == "stopped" for o in history)
            spent = self.limits.fidelity_spent(history)
            self.on_progress(
                Progress(
                    len(history), self.budget, best_ncode, best_score, brief, running, queued, failed, stopped, spent
                )
            )
        return best


class RankingScaffold(LoopScaffold):
    """Mixin of the LM-Searcher loops' parts (synchronous and asynchronous): a proposer fills a pool, a ranker picks."""

    proposer: Proposer
    ranker: Ranker
    reading: Reading  # what proposers and rankers read of stopped and infeasible results, and of several objectives
    known: list[Observation]  # results from before the run (--warm-start): read, never evaluated, never counted
    queue: list[str]  # codes to evaluate first (study.enqueue, a list of configurations, --transfer), in order
    dropped: dict[int, list[tuple[str, str]]]  # per step: drawn codes known to break a constraint, and why
    repaired: dict[int, list[tuple[str, str]]]  # per step: (dropped code, the code walked inside from it)

    def view(self, history: list[Observation], iteration: int) -> tuple[list[Observation], Metric, list[Constraint]]:
        """The history and metric that proposers and rankers read at a step: the known results first, stopped
        and infeasible evaluations as ``reading`` says, and in a run of several objectives, one number per evaluation
        (a scalarisation that changes per step) and the step's own limits on the other objectives, if any."""
        reading = self.reading
        view = searcher_view([*self.known, *history], self.evaluator.metric, reading.stopped_as, reading.infeasible_as)
        objectives = self.evaluator.objectives
        if len(objectives) == 1:
            return view, self.evaluator.metric, []
        rule = reading.scalarisation
        if rule == "auto":  # a box helps where the pool can be kept inside it (BENCHMARKS.md §10), and only whoever
            # reads the one number: NSGA-II, TPE and random search read every objective or none, and stay as users know
            boxed = bool(view) and (self.ranker.reads_scalarisation or self.proposer.reads_scalarisation)
            rule = "epsilon" if boxed and self.known_before_all(view[-1].ncode, objectives[1:]) else "fronts"
        return scalarised_view(view, objectives, self.rng(iteration, "weights"), reading.infeasible_as, rule)

    def known_before_all(self, code: str, objectives: Sequence[Objective]) -> bool:
        """Whether the task knows every one of ``objectives`` of a code before evaluating it."""
        known = self.evaluator.known_before(code)
        return all(objective.name in known for objective in objectives)

    def propose(
        self, history: list[Observation], seen: set[str], rng: random.Random, n: int, iteration: int
    ) -> list[str]:
        """Up to ``n`` candidates outside ``seen`` and the known results: queued codes first, while any wait. A step
        with its own limits (``epsilon``) proposes only candidates known to keep them, when the draws find any."""
        seen = seen | {o.ncode for o in self.known}
        waiting = [code for code in self.queue if code not in seen]
        if waiting:
            return waiting[:n]
        view, metric, limits = self.view(history, iteration)
        self.repaired.pop(iteration, None)  # a repool's pool replaces the step's pool

        def draw(avoid: set[str], count: int) -> list[str]:
            space, objectives = self.evaluator.space, self.evaluator.objectives
            return self.proposer.propose(ProposalContext(space, metric, view, seen | avoid, rng, objectives), count)

        if limits:
            within = self.within_limits(limits)
            inside, outside = known_feasible(draw, n, within, FEASIBLE_DRAWS * n)
            if inside:  # of the codes outside the step's box, those that break a constraint of the run were dropped
                broken = ((code, self.evaluator.broken_before(code)) for code, _ in outside)
                self.dropped[iteration] = [(code, "; ".join(problems)) for code, problems in broken if problems]
                return inside
        pool, rejected = known_feasible(draw, n, self.evaluator.broken_before, FEASIBLE_DRAWS * n)
        self.dropped[iteration] = rejected  # kept with the step's decision, so `show` can say what never ran
        if pool or not rejected:
            return pool
        rejects = [code for code, _ in rejected]
        walked = repaired_pool(rejects, n, self.evaluator.space, self.evaluator.excess_before, seen, rng)
        if walked:
            self.repaired[iteration] = walked  # so `show` can say which pool codes no proposer drew as they are
            return [code for _, code in walked]
        log.warning(
            "none of %d proposed codes keeps the constraints known before evaluation (%s), and no one-slot changes "
            "bring one inside; evaluating proposals as they come, each recorded infeasible", len(rejected),
            rejected[0][1],
        )  # fmt: skip
        del self.dropped[iteration]  # evaluated after all
        return draw(set(), n)

    def within_limits(self, limits: list[Constraint]) -> Callable[[str], list[str]]:
        """What a candidate breaks of the run's constraints and the step's limits, as far as known before."""

        def breaks(code: str) -> list[str]:
            return self.evaluator.broken_before(code) + broken_where_known(limits, self.evaluator.known_before(code))

        return breaks

    def decide(
        self, run_id: str, iteration: int, history: list[Observation], seen: set[str], pool: list[str], k: int
    ) -> Decision:
        """Rank ``pool`` for ``k`` picks and record the decision. A ranker that re-asks gets fresh pools,
        each drawn with the next ``repool<n>`` generator of the step. A pool of queued codes is taken in order
        (recorded as ranker ``queued``)."""
        if pool and all(code in self.queue for code in pool):
            decision = Decision(pool[:k], pool)
            self.store.record_decision(run_id, iteration, "queued", pool, decision)
            return decision
        repools = itertools.count(1)
        view, metric, _ = self.view(history, iteration)
        request = RankRequest(
            self.evaluator.space, metric, view, pool, k, self.rng(iteration, "rank"),
            repool=lambda: self.propose(
                history, seen, self.rng(iteration, f"repool{next(repools)}"), len(pool), iteration
            ),
        )  # fmt: skip
        decision = self.ranker.rank(request)
        dropped, repaired = self.dropped.pop(iteration, []), self.repaired.pop(iteration, [])
        picked_by = decision.picked_by or self.ranker.name
        self.store.record_decision(run_id, iteration, picked_by, decision.pool or pool, decision, dropped, repaired)
        return decision

    def pick_pending(
        self, run_id: str, iteration: int, history: list[Observation], pending: Iterable[str], n: int
    ) -> str | None:
        """One code for a free worker or an ``ask``: a pool of ``n`` outside the history and the codes still
        pending, ranked for one pick, which is marked pending in the store before anyone evaluates it.
        None when no code is left to propose."""
        seen = {o.ncode for o in history} | set(pending)
        pool = self.propose(history, seen, self.rng(iteration, "encode"), n, iteration)
        if not pool:
            return None
        code = (self.decide(run_id, iteration, history, seen, pool, 1).chosen or pool)[0]
        self.store.add_pending(run_id, code, iteration)
        return code
