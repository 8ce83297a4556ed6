"""Rankers: choose k distinct members of the pool."""

from __future__ import annotations

import random

import pytest

from agent.rankers import Decision, FirstRanker, RandomRanker, RankRequest
from agent.store import Observation
from evaluators.base import Metric
from tools.spaces import nb201_space

POOL = ["333132", "100010", "444444", "010001", "301020", "000100", "223311", "120403"]


def request(pool: list[str], k: int, seed: int = 0) -> RankRequest:
    history = [Observation(0, "333333", 90.0, "ok")]
    return RankRequest(nb201_space(), Metric("val_acc"), history, list(pool), k, random.Random(seed))


@pytest.mark.parametrize(("pool_size", "k"), [(8, 3), (8, 8), (8, 1), (2, 5), (0, 3), (5, 0)])
@pytest.mark.parametrize("ranker_class", [FirstRanker, RandomRanker])
def test_ranker_contract(ranker_class, pool_size, k):
    pool = POOL[:pool_size]
    decision = ranker_class().rank(request(pool, k))
    assert isinstance(decision, Decision)
    assert len(decision.chosen) == min(k, pool_size)
    assert len(set(decision.chosen)) == len(decision.chosen)
    assert set(decision.chosen) <= set(pool)
    assert decision.pool == pool
    assert not decision.fallback
    assert decision.error is None


def test_first_ranker_keeps_the_proposers_order():
    assert FirstRanker().rank(request(POOL, 3)).chosen == POOL[:3]


def test_random_ranker_is_deterministic_by_seed_and_random_across_seeds():
    assert RandomRanker().rank(request(POOL, 3, seed=4)).chosen == RandomRanker().rank(request(POOL, 3, seed=4)).chosen
    picks = {tuple(RandomRanker().rank(request(POOL, 3, seed=seed)).chosen) for seed in range(30)}
    assert len(picks) > 10
    assert {code for pick in picks for code in pick} == set(POOL)


def test_close_is_harmless():
    for ranker in (FirstRanker(), RandomRanker()):
        assert ranker.close() is None
