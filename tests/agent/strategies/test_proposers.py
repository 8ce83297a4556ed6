"""Proposers: the shared contract, then what each one specifically promises."""

from __future__ import annotations

import random

import pytest

from agent.runs.store import Observation
from agent.strategies.proposers import (
    PROPOSERS,
    EvolutionProposer,
    MixedProposer,
    ProposalContext,
    RandomProposer,
    TPEProposer,
)
from tools.evaluator import Metric
from tools.ncode import SearchSpace, Slot, from_indices, is_valid, normalize, sample, to_indices
from tools.spaces import nb201_space

METRIC = Metric("synthetic")


def synthetic_score(space: SearchSpace, code: str) -> float:
    """A made-up landscape: more expensive ops score higher, with a bonus for the last edge."""
    indices = to_indices(space, code)
    return float(sum(indices) + 3 * (indices[-1] == 3))


def make_history(space: SearchSpace, count: int, seed: int = 0, failed_every: int = 0) -> list[Observation]:
    rng = random.Random(seed)
    codes: list[str] = []
    while len(codes) < count:
        code = sample(space, rng)
        if code not in codes:
            codes.append(code)
    return [
        Observation(i, code, None, "failed")
        if failed_every and i % failed_every == failed_every - 1
        else Observation(i, code, synthetic_score(space, code), "ok")
        for i, code in enumerate(codes)
    ]


def context(space: SearchSpace, history: list[Observation], seed: int = 0, extra_seen=()) -> ProposalContext:
    return ProposalContext(space, METRIC, history, {o.ncode for o in history} | set(extra_seen), random.Random(seed))


def build(name: str, seed: int = 0):
    return PROPOSERS[name](seed, {})


def hamming(left: str, right: str) -> int:
    return sum(a != b for a, b in zip(left, right, strict=True))


def tiny_space() -> SearchSpace:
    return SearchSpace("tiny", (Slot("a", (0, 1)), Slot("b", (0, 1))))


# the contract ------------------------------------------------------------------------------------


@pytest.mark.parametrize("history_size", [0, 5, 40])
@pytest.mark.parametrize("name", sorted(PROPOSERS))
def test_proposer_contract(name, history_size):
    space = nb201_space()
    history = make_history(space, history_size, failed_every=7)
    pending = {"333132", "444444"}  # seen but not evaluated yet (in flight)

    def run(seed: int) -> list[str]:
        return build(name).propose(context(space, history, seed, pending), 10)

    codes = run(1)
    assert len(codes) == 10  # plenty remain
    assert len(set(codes)) == len(codes)
    seen = {o.ncode for o in history} | pending
    for code in codes:
        assert is_valid(space, code), code
        assert normalize(space, code) == code
        assert code not in seen
    assert run(1) == codes  # same seed and history: same proposals
    assert build(name).propose(context(space, history, 1, pending), 3) == build(name).propose(
        context(space, history, 1, pending), 3
    )
    assert len(build(name).propose(context(space, history, 2, pending), 1)) == 1


@pytest.mark.parametrize("name", sorted(PROPOSERS))
def test_proposer_on_an_almost_exhausted_space(name):
    space = tiny_space()
    history = [Observation(i, code, float(i), "ok") for i, code in enumerate(["00", "01", "10"])]
    assert build(name).propose(context(space, history, 0), 5) == ["11"]
    assert build(name).propose(context(space, history, 0, extra_seen={"11"}), 5) == []


@pytest.mark.parametrize("name", sorted(PROPOSERS))
def test_proposer_on_an_exhausted_space_without_history(name):
    space = tiny_space()
    assert build(name).propose(context(space, [], 0, extra_seen={"00", "01", "10", "11"}), 3) == []
    assert sorted(build(name).propose(context(space, [], 0), 10)) == ["00", "01", "10", "11"]


@pytest.mark.parametrize("name", sorted(PROPOSERS))
def test_proposer_asked_for_nothing_returns_nothing(name):
    space = nb201_space()
    assert build(name).propose(context(space, make_history(space, 40)), 0) == []


def test_random_proposer_finds_the_last_unseen_code_of_a_larger_space():
    space = SearchSpace("bits", tuple(Slot(f"b{i}", (0, 1)) for i in range(12)))
    every = {format(i, "012b") for i in range(2**12)}
    ctx = ProposalContext(space, METRIC, [], every - {"101010101010"}, random.Random(0))
    assert RandomProposer().propose(ctx, 5) == ["101010101010"]


# specific promises -------------------------------------------------------------------------------


def test_evolution_is_random_search_until_the_population_is_filled():
    space = nb201_space()
    history = make_history(space, 29)
    evolution = EvolutionProposer(population=30, sample_size=10)
    assert evolution.propose(context(space, history, 5), 10) == RandomProposer().propose(context(space, history, 5), 10)


def test_evolution_children_are_one_slot_mutations_of_the_population():
    space = nb201_space()
    history = make_history(space, 60, seed=3)
    population = {o.ncode for o in history[-30:]}
    children = EvolutionProposer(population=30, sample_size=10).propose(context(space, history, 4), 10)
    assert len(children) == 10
    for child in children:
        assert any(hamming(child, parent) == 1 for parent in population), child


def test_evolution_tournament_favours_the_best_member():
    space = nb201_space()
    history = make_history(space, 30, seed=5)
    best = max(history, key=lambda o: o.score).ncode
    children = EvolutionProposer(population=30, sample_size=30).propose(context(space, history, 6), 10)
    assert all(hamming(child, best) == 1 for child in children)  # S = P: the best always wins


def test_evolution_rejects_bad_sizes():
    with pytest.raises(ValueError, match="sample size"):
        EvolutionProposer(population=5, sample_size=10)
    with pytest.raises(ValueError, match="sample size"):
        EvolutionProposer(population=5, sample_size=0)


def test_evolution_survives_a_history_of_failures():
    space = nb201_space()
    history = [Observation(o.iteration, o.ncode, None, "failed") for o in make_history(space, 30)]
    assert len(EvolutionProposer(population=30, sample_size=10).propose(context(space, history, 0), 5)) == 5


def test_mixed_pool_is_half_random_half_mutations_of_the_top_codes():
    space = nb201_space()
    history = make_history(space, 40, seed=2)
    top = [o.ncode for o in sorted(history, key=lambda o: -o.score)[:10]]
    pool = MixedProposer(random_fraction=0.5, top=10).propose(context(space, history, 9), 10)
    assert len(pool) == len(set(pool)) == 10
    randoms = RandomProposer().propose(context(space, history, 9), 5)
    assert set(randoms) <= set(pool)
    for child in set(pool) - set(randoms):
        assert any(hamming(child, parent) == 1 for parent in top), child


def test_mixed_pool_order_does_not_reveal_which_half_a_code_came_from():
    space = nb201_space()
    history = make_history(space, 40, seed=2)
    first_is_random = []
    for seed in range(40):
        pool = MixedProposer(random_fraction=0.5).propose(context(space, history, seed), 10)
        first_is_random.append(pool[0] in RandomProposer().propose(context(space, history, seed), 5))
    assert 8 <= sum(first_is_random) <= 32, "the first place should hold either half"


def test_mixed_pool_without_history_is_random():
    space = nb201_space()
    pool = MixedProposer(random_fraction=0.5).propose(context(space, [], 3), 10)
    assert len(set(pool)) == 10
    assert all(is_valid(space, code) for code in pool)


def test_mixed_rejects_a_bad_fraction():
    with pytest.raises(ValueError, match="random fraction"):
        MixedProposer(random_fraction=1.5)


def test_mutation_proposer_uses_the_direction_of_the_metric():
    space = nb201_space()
    history = make_history(space, 40, seed=8)
    worst = [o.ncode for o in sorted(history, key=lambda o: o.score)[:3]]
    ctx = ProposalContext(space, Metric("error", maximize=False), history, {o.ncode for o in history}, random.Random(0))
    children = PROPOSERS["mutation"](0, {"top": 3}).propose(ctx, 5)
    assert len(children) == 5
    assert all(any(hamming(child, parent) == 1 for parent in worst) for child in children)


def test_tpe_skips_seen_codes():
    space = SearchSpace("small", tuple(Slot(f"s{i}", (0, 1, 2)) for i in range(3)))
    every = [from_indices((a, b, c)) for a in range(3) for b in range(3) for c in range(3)]
    history = [Observation(i, code, float(sum(to_indices(space, code))), "ok") for i, code in enumerate(every[:20])]
    proposals = TPEProposer(seed=0).propose(context(space, history, 0), 7)
    assert sorted(proposals) == sorted(every[20:])
    pending = set(every[20:24])
    proposals = TPEProposer(seed=0).propose(context(space, history, 0, pending), 7)
    assert sorted(proposals) == sorted(every[24:])


def test_tpe_is_deterministic_with_a_fresh_proposer_and_depends_on_its_seed():
    space = nb201_space()
    history = make_history(space, 30, seed=1)
    first = TPEProposer(seed=3).propose(context(space, history, 0), 10)
    assert TPEProposer(seed=3).propose(context(space, history, 0), 10) == first
    assert TPEProposer(seed=4).propose(context(space, history, 0), 10) != first


def test_tpe_learns_from_history_added_later():
    space = nb201_space()
    history = make_history(space, 40, seed=2)
    proposer = TPEProposer(seed=0)
    proposer.propose(context(space, history[:20]), 5)
    proposer.propose(context(space, history), 5)
    complete = [t for t in proposer._study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 40  # every successful observation told exactly once
