"""Proposers build the candidate pool the ranker chooses from.

Contract: ``propose(context, n)`` returns up to ``n`` distinct, valid, canonical
codes of ``context.space`` that are not in ``context.seen``; fewer only when the
space has no more unseen codes, or on a turn where the proposer decides alone (one code: the
GP's turn of a ``portfolio``, evaluated as is). Proposers are deterministic given
``context.rng`` and the history, so a resumed run proposes what it would have.
"""

from __future__ import annotations

import itertools
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from agent.config import SearchConfig
from agent.runs.store import Observation
from tools.evaluator import Metric
from tools.ncode import SearchSpace, Slot, from_indices, is_valid, mutate, neighbours, normalize, sample, to_indices
from tools.objectives import Objective

if TYPE_CHECKING:
    import optuna


@dataclass
class ProposalContext:
    space: SearchSpace
    metric: Metric
    history: Sequence[Observation]
    seen: set[str]
    rng: random.Random
    objectives: Sequence[Objective] = ()  # a run of several: each one, for proposers that read them all


def scored(history: Sequence[Observation], metric: Metric) -> list[tuple[float, str]]:
    """(utility, code) of successful evaluations, best first; utility is higher-is-better."""
    pairs = [(metric.utility(o.score), o.ncode) for o in history if o.score is not None]
    return sorted(pairs, key=lambda pair: -pair[0])


ENUMERATION_LIMIT = 1_000_000


def all_codes(space: SearchSpace) -> list[str]:
    """Every valid canonical code of a (small) space, in a fixed order."""
    codes = {
        normalize(space, from_indices(choice)) for choice in itertools.product(*map(space.choices, range(space.length)))
    }
    return sorted(code for code in codes if is_valid(space, code))


def unseen_random(context: ProposalContext, n: int, exclude: set[str], max_misses: int = 200) -> list[str]:
    """Up to ``n`` random valid codes outside ``context.seen`` and ``exclude``."""
    space = context.space
    if space.members is not None:
        free = sorted(space.members - context.seen - exclude)
        return context.rng.sample(free, min(n, len(free)))
    found: list[str] = []
    misses = 0
    while len(found) < n and misses < max_misses:
        code = sample(space, context.rng)
        if code in context.seen or code in exclude or code in found:
            misses += 1
            continue
        found.append(code)
    if len(found) < n and space.size() <= ENUMERATION_LIMIT:
        # Random draws keep hitting seen codes: the space is nearly used up, so list what is left.
        taken = context.seen | exclude | set(found)
        free = [code for code in all_codes(space) if code not in taken]
        found += context.rng.sample(free, min(n - len(found), len(free)))
    return found


def known_feasible(
    draw: Callable[[set[str], int], list[str]], n: int, broken_before: Callable[[str], list[str]], max_drawn: int
) -> tuple[list[str], list[tuple[str, str]]]:
    """Up to ``n`` codes of repeated ``draw(avoid, count)`` calls that are not known to break a constraint before
    evaluation (``Evaluator.broken_before``), and the ones rejected with their reasons. Draws again only while
    codes are rejected, avoiding every code drawn so far, up to about ``max_drawn`` codes in all: a draw with
    nothing rejected is returned as the proposer gave it, so a run without such constraints proposes as before."""
    found: list[str] = []
    rejected: list[tuple[str, str]] = []
    avoid: set[str] = set()
    while len(found) < n and len(avoid) < max_drawn:
        batch = [code for code in draw(avoid, n - len(found)) if code not in avoid]
        avoid.update(batch)
        kept = []
        for code in batch:
            problems = broken_before(code)
            if problems:
                rejected.append((code, "; ".join(problems)))
            else:
                kept.append(code)
        found += kept
        if len(kept) == len(batch):  # nothing rejected (or nothing left): what the proposer gives
            break
    return found, rejected


def repaired(code: str, space: SearchSpace, excess: Callable[[str], float], rng: random.Random) -> str | None:
    """``code`` walked one slot at a time into the constraints known before evaluating: each move is the first
    of its neighbours, in random order, that lies less far past them (``excess``), until none is broken. None when
    no neighbour helps. Under a tight limit (small LoRA ranks, a parameter budget) random draws almost never keep
    it, while a few moves from any draw do, and the walk stops just inside, where such limits usually bind."""
    amount = excess(code)
    while amount > 0:
        moves = neighbours(space, code)
        rng.shuffle(moves)
        better = next(((move, after) for move in moves if (after := excess(move)) < amount), None)
        if better is None:
            return None
        code, amount = better
    return code


def repaired_pool(
    codes: Sequence[str], n: int, space: SearchSpace, excess: Callable[[str], float], avoid: set[str],
    rng: random.Random,
) -> list[tuple[str, str]]:  # fmt: skip
    """Up to ``n`` distinct codes outside ``avoid`` repaired from ``codes`` in order (see :func:`repaired`), each
    as (the code it was walked from, the repaired code), so that a record can say which draw it stands for. Gives
    up after ``n`` walks that found no way inside: such a limit is then out of reach from the draws."""
    found: list[tuple[str, str]] = []
    taken: set[str] = set()
    stuck = 0
    for code in codes:
        if len(found) == n or stuck == n:
            break
        fixed = repaired(code, space, excess, rng)
        stuck += fixed is None
        if fixed is not None and fixed not in avoid and fixed not in taken:
            found.append((code, fixed))
            taken.add(fixed)
    return found


class Proposer(ABC):
    name: str
    # whether it reads the one number a run of several objectives shows per step (agent.strategies.scalarisations)
    reads_scalarisation: ClassVar[bool] = True

    @abstractmethod
    def propose(self, context: ProposalContext, n: int) -> list[str]: ...


class RandomProposer(Proposer):
    """Uniform unseen codes: the paper's inference pool (10 random candidates)."""

    name = "random"
    reads_scalarisation = False

    def propose(self, context: ProposalContext, n: int) -> list[str]:
        return unseen_random(context, n, set())


class MutationProposer(Proposer):
    """One-slot mutations of the ``top`` best codes so far; random until there is history.

    On a results table (``space.members``) a child is an unseen member nearest to its parent (Hamming distance,
    ties drawn at random): on a partial table few members are one slot apart, and mutations that fall outside it
    would leave the pool to random codes.
    """

    name = "mutation"

    def __init__(self, top: int = 10) -> None:
        self.top = top

    def propose(self, context: ProposalContext, n: int) -> list[str]:
        parents = [code for _, code in scored(context.history, context.metric)[: self.top]]
        if context.space.members is not None and parents:
            free = sorted(context.space.members - context.seen)
            children: list[str] = []
            while free and len(children) < n:
                child = nearest(context.rng.choice(parents), free, context.rng)
                free.remove(child)
                children.append(child)
            return children
        found: list[str] = []
        for _ in range(20 * n if parents else 0):
            if len(found) == n:
                break
            child = mutate(context.space, context.rng.choice(parents), context.rng)
            if child not in context.seen and child not in found:
                found.append(child)
        return found + unseen_random(context, n - len(found), set(found))


class MixedProposer(Proposer):
    """``random_fraction`` of the pool random, the rest mutations of the best so far, shuffled.

    With only random candidates even a perfect ranker cannot beat evolution on
    NAS-Bench-201 (see DESIGN.md), so this is the default pool for LLM rankers.
    """

    name = "mixed"

    def __init__(self, random_fraction: float, top: int = 10) -> None:
        if not 0.0 <= random_fraction <= 1.0:
            raise ValueError(f"random fraction must be in [0, 1], got {random_fraction}")
        self.random_fraction = random_fraction
        self.mutation = MutationProposer(top)

    def propose(self, context: ProposalContext, n: int) -> list[str]:
        n_random = round(n * self.random_fraction)
        pool = unseen_random(context, n_random, set())
        pool += self.mutation.propose(
            ProposalContext(**{**vars(context), "seen": context.seen | set(pool)}), n - len(pool)
        )
        context.rng.shuffle(pool)  # so that a ranker's position bias cannot favour one half
        return pool


class EvolutionProposer(Proposer):
    """Regularized evolution (Real et al. 2019) as a proposer.

    The population is the ``population`` most recent evaluations (aging); each
    child is a one-slot mutation of the best of ``sample_size`` members drawn at
    random. Until the population is full, children are random codes. Children
    are unique: already-queried codes are never proposed.
    """

    name = "evolution"

    def __init__(self, population: int, sample_size: int) -> None:
        if sample_size > population or sample_size < 1:
            raise ValueError(f"evolution needs 1 <= sample size <= population, got S={sample_size}, P={population}")
        self.population = population
        self.sample_size = sample_size

    def propose(self, context: ProposalContext, n: int) -> list[str]:
        alive = [o for o in context.history if o.score is not None][-self.population :]
        if len(alive) < self.population:
            return unseen_random(context, n, set())
        found: list[str] = []
        for _ in range(50 * n):
            if len(found) == n:
                break
            tournament = context.rng.sample(alive, min(self.sample_size, len(alive)))
            parent = max(tournament, key=lambda o: context.metric.utility(o.score))
            child = mutate(context.space, parent.ncode, context.rng)
            if child not in context.seen and child not in found:
                found.append(child)
        return found + unseen_random(context, n - len(found), set(found))


class LocalSearchProposer(Proposer):
    """Local search (White et al. 2021, "Local search is state of the art for NAS benchmarks"), NASLib's variant.

    After ``initial`` random codes the best becomes the centre, and every unseen one-slot neighbour of the
    centre is proposed, in random order. When the neighbourhood is used up, the best neighbour becomes the
    centre if it beats the centre; otherwise the search is stuck and restarts from a random code. With
    ``first_improvement`` the centre moves as soon as a neighbour beats it: what a ranker that puts the
    likeliest neighbours first makes worth doing.

    The walk is replayed from the history on every call (:func:`local_search_centre`), so the proposer keeps
    no state and a resumed run proposes what an uninterrupted one would. With ``n > 1`` (a pool for a ranker)
    the pool is the centre's unseen neighbours; random codes fill it when fewer are left.
    """

    name = "local-search"

    def __init__(self, initial: int = 10, first_improvement: bool = False) -> None:
        if initial < 1:
            raise ValueError(f"local search needs at least 1 initial random code, got {initial}")
        self.initial = initial
        self.first_improvement = first_improvement

    def propose(self, context: ProposalContext, n: int) -> list[str]:
        centre = local_search_centre(context, self.initial, self.first_improvement)
        found = [code for code in neighbours(context.space, centre) if code not in context.seen] if centre else []
        context.rng.shuffle(found)
        found = found[:n]
        return found + unseen_random(context, n - len(found), set(found))


def local_search_centre(context: ProposalContext, initial: int, first_improvement: bool) -> str | None:
    """The code whose neighbourhood local search explores next, or None when its next code is random
    (the first ``initial`` codes, and a restart after a neighbourhood without improvement).

    The history is replayed in order. A code that is neither a neighbour of the centre nor the restart
    code (it came from another proposer, or was in flight while the centre moved) counts as seen only.
    """
    evaluated = [
        (context.metric.utility(o.score) if o.score is not None else -math.inf, o.ncode) for o in context.history
    ]
    if len(evaluated) < initial:
        return None
    utility, centre = max(evaluated[:initial], key=lambda pair: pair[0])
    seen = {code for _, code in evaluated[:initial]}
    around = set(neighbours(context.space, centre))
    best_neighbour: tuple[float, str] | None = None
    restarting = False
    for step_utility, code in evaluated[initial:]:
        seen.add(code)
        if restarting or (first_improvement and code in around and step_utility > utility):
            utility, centre, best_neighbour, restarting = step_utility, code, None, False
            around = set(neighbours(context.space, centre))
        elif code in around and (best_neighbour is None or step_utility > best_neighbour[0]):
            best_neighbour = (step_utility, code)
        if around <= seen:  # the neighbourhood is used up: move to its best, or restart
            if best_neighbour is not None and best_neighbour[0] > utility:
                utility, centre = best_neighbour
                best_neighbour = None
                around = set(neighbours(context.space, centre))
            else:
                restarting = True
    return None if restarting else centre


class OptunaProposer(Proposer):
    """An Optuna sampler through ask/tell, so users compare against the library they know.

    Each slot is a categorical parameter over its option indices, and a numeric range (``Slot.int``/``Slot.float``)
    an integer parameter over its grid's indices, so the sampler reads its order (a log range's grid is already
    even in the log): the sampler models the product space, results tables included. ``propose`` is a pure
    function of the history and ``context.rng``, so a resumed run proposes what an uninterrupted one would: every
    call builds a fresh study whose sampler is seeded from ``context.rng``, adds each scored observation as a
    completed trial in history order (utility, so always maximized), then asks. (A study kept across calls
    depends on how many asks this process made, and resumed runs diverged.)

    On a results table (``space.members``) a suggestion that is not an unseen
    member becomes the nearest unseen member (Hamming distance over slot indices,
    ties broken by ``context.rng``): on a complete table this is the plain sampler, on a
    sparse one its suggestions projected onto the rows that exist. Elsewhere, a suggestion
    that is invalid or already seen is asked again, and random codes fill up.
    Until ``startup_trials`` observations are scored, suggestions are random.
    """

    reads_scalarisation = False  # a run of several objectives gives the sampler every one (``_study``)

    def __init__(self, startup_trials: int = 10) -> None:
        self.startup_trials = startup_trials

    def fitted(self, history: Sequence[Observation]) -> bool:
        """Whether the history holds the ``startup_trials`` scores the sampler needs to stop suggesting at random."""
        return sum(o.score is not None for o in history) >= self.startup_trials

    @abstractmethod
    def sampler(self, seed: int) -> optuna.samplers.BaseSampler: ...

    def _study(self, context: ProposalContext) -> tuple[optuna.Study, dict[str, optuna.distributions.BaseDistribution]]:
        """A new study holding the history as completed trials, and the per-slot distributions. In a run of several
        objectives the study has them all (so TPE is multi-objective TPE), read from ``Observation.values``, not
        from the scalarisation rankers read; a result that broke a constraint keeps its true values and is marked
        with a positive constraint (``Trial.set_constraint``), which Optuna 5's samplers read."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space = context.space
        distributions = {f"s{i}": _distribution(slot, space.choices(i)) for i, slot in enumerate(space.slots)}
        objectives = list(context.objectives)
        several = len(objectives) > 1
        directions = ["maximize"] * (len(objectives) if several else 1)
        study = optuna.create_study(directions=directions, sampler=self.sampler(context.rng.randrange(2**31)))
        constrained = any(o.status == "infeasible" for o in context.history)
        usable = [o for o in context.history if o.score is not None and (o.values is not None or not several)]
        trials = []
        for number, o in enumerate(usable):
            if o.values is not None:  # the true values (an infeasible result's too), not what the view shows
                pairs = zip(objectives, o.values, strict=True) if several else [(context.metric, o.values[0])]
                utilities = [float(objective.utility(value)) for objective, value in pairs]
            else:
                utilities = [float(context.metric.utility(o.score))]
            attrs = dict(self.trial_attrs(number))
            if constrained:
                attrs["constraints:infeasible"] = 1.0 if o.status == "infeasible" else 0.0
            params = {f"s{i}": index for i, index in enumerate(to_indices(space, o.ncode))}
            trials.append(optuna.trial.create_trial(params=params, distributions=distributions, values=utilities,
                                                    system_attrs=attrs))  # fmt: skip
        study.add_trials(trials)
        return study, distributions

    def trial_attrs(self, number: int) -> dict[str, object]:
        """System attributes the sampler keeps on the trial it asked for ``number``-th (NSGA-II: its generation)."""
        return {}

    def propose(self, context: ProposalContext, n: int) -> list[str]:
        space = context.space
        if n <= 0:
            return []
        study, distributions = self._study(context)

        def suggest() -> tuple[int, ...]:
            trial = study.ask(distributions)
            return tuple(trial.params[f"s{i}"] for i in range(space.length))

        if space.members is not None:
            free = sorted(space.members - context.seen)
            found: list[str] = []
            while free and len(found) < n:
                code = nearest(from_indices(suggest()), free, context.rng)
                free.remove(code)
                found.append(code)
            return found
        found = []
        for _ in range(20 * n):
            if len(found) == n:
                break
            code = normalize(space, from_indices(suggest()))
            if is_valid(space, code) and code not in context.seen and code not in found:
                found.append(code)
        return found + unseen_random(context, n - len(found), set(found))


def _distribution(slot: Slot, choices: Sequence[int]) -> optuna.distributions.BaseDistribution:
    """A slot as an Optuna parameter over option indices: ordered for a numeric range, categorical otherwise."""
    import optuna

    if slot.numeric is not None and list(choices) == list(range(len(slot.options))):
        return optuna.distributions.IntDistribution(0, len(slot.options) - 1)
    return optuna.distributions.CategoricalDistribution(choices)


class TPEProposer(OptunaProposer):
    """Optuna's TPE (Bergstra et al. 2011): the most used sampler of hyperparameter search."""

    name = "tpe"

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup_trials)


class GPProposer(OptunaProposer):
    """Bayesian optimisation with a Gaussian-process surrogate: Optuna's GPSampler.

    Why this one: a learned surrogate that users know, from a maintained library. For categorical
    parameters its Matérn-5/2 kernel works on the Hamming distance between codes, the usual kernel for
    NAS cells; the acquisition is log expected improvement. The GP is refitted on every call (its
    hyperparameters by maximum likelihood), which costs tens of milliseconds at 100 observations.
    """

    name = "gp"

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=self.startup_trials)


class NSGA2Proposer(OptunaProposer):
    """NSGA-II (Deb et al. 2002), Optuna's NSGAIISampler: the evolutionary baseline of multi-objective search.
    Each history trial carries the generation a sequential NSGA-II would have given it, so the fresh study of
    each call breeds from the population it would have bred from."""

    name = "nsga2"
    population = 20

    def __init__(self) -> None:
        super().__init__(startup_trials=self.population)

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.NSGAIISampler(population_size=self.population, seed=seed)

    def trial_attrs(self, number: int) -> dict[str, object]:
        return {"NSGAIISampler:generation": number // self.population}


class GuidedMixedProposer(Proposer):
    """A mixed pool with a model-based sampler's suggestion in it: one code from ``guide`` (Optuna's GP or TPE)
    once it has its ``startup_trials`` scores, the rest a :class:`MixedProposer` pool.

    Why: the sampler proposes a code from a model of the whole space, which neither random codes nor one-slot
    mutations reach, and the ranker still decides. Measured in BENCHMARKS.md §8 and §16. Each step pays for
    one fit of the guide: a fraction of a second for the GP at 100 observations, milliseconds for TPE (§14).
    """

    def __init__(self, random_fraction: float, guide: OptunaProposer) -> None:
        self.guide = guide
        self.mixed = MixedProposer(random_fraction)
        self.name = f"mixed-{self.guide.name}"

    def propose(self, context: ProposalContext, n: int) -> list[str]:
        guide = self.guide.propose(context, min(1, n)) if self.guide.fitted(context.history) else []
        pool = guide + self.mixed.propose(
            ProposalContext(**{**vars(context), "seen": context.seen | set(guide)}), n - len(guide)
        )
        context.rng.shuffle(pool)
        return pool


class PortfolioProposer(Proposer):
    """The ranker and Bayesian optimisation take turns: every ``every``-th step, once the GP has its
    ``startup_trials`` scores, the pool is the GP's suggestion alone (so it is evaluated as is); the other
    steps get a :class:`MixedProposer` pool for the ranker.

    Why: putting the GP's code into the ranker's pool (:class:`GuidedMixedProposer`) lets the ranker turn it
    down, and LM-Searcher-tiny mostly did. Taking turns keeps what each is good at: the GP's global expected
    improvement and the ranker's reading of the best codes' neighbourhoods. Measured in BENCHMARKS.md §8.
    The turn is fixed by the number of evaluations, so a resumed run takes the same turns.
    """

    name = "portfolio"

    def __init__(self, random_fraction: float, every: int) -> None:
        if every < 1:
            raise ValueError(f"--gp-every must be at least 1, got {every}")
        self.guide = GPProposer()
        self.mixed = MixedProposer(random_fraction)
        self.every = every

    def propose(self, context: ProposalContext, n: int) -> list[str]:
        turn = (len(context.history) - self.guide.startup_trials) % self.every == 0
        if turn and self.guide.fitted(context.history):
            return self.guide.propose(context, min(1, n))
        return self.mixed.propose(context, n)


def code_matrix(codes: Sequence[str]) -> np.ndarray:
    """Codes of one space as rows of their symbols' bytes, so Hamming distances become array comparisons
    (one symbol per slot: distance over symbols is distance over slot indices)."""
    return np.frombuffer("".join(codes).encode("ascii"), dtype=np.uint8).reshape(len(codes), -1)


def nearest(code: str, codes: list[str], rng: random.Random) -> str:
    """The code of ``codes`` (sorted, non-empty) at the least Hamming distance from ``code``; ties drawn by ``rng``."""
    distances = (code_matrix(codes) != code_matrix([code])).sum(axis=1)
    return rng.choice([codes[i] for i in np.flatnonzero(distances == distances.min())])


PROPOSERS: dict[str, Callable[[SearchConfig], Proposer]] = {  # built from the run's config, which holds the defaults
    "random": lambda config: RandomProposer(),
    "mutation": lambda config: MutationProposer(),
    "mixed": lambda config: MixedProposer(config.random_fraction),
    "mixed-gp": lambda config: GuidedMixedProposer(config.random_fraction, GPProposer()),
    "mixed-tpe": lambda config: GuidedMixedProposer(config.random_fraction, TPEProposer()),
    "portfolio": lambda config: PortfolioProposer(config.random_fraction, config.gp_every),
    "evolution": lambda config: EvolutionProposer(config.population, config.sample_size),
    "tpe": lambda config: TPEProposer(),
    "nsga2": lambda config: NSGA2Proposer(),
    "gp": lambda config: GPProposer(),
    "local-search": lambda config: LocalSearchProposer(),
}
