"""Rankers: choose k distinct members of the pool."""

from __future__ import annotations

import random

import pytest

from agent.runs.store import Observation
from agent.strategies.rankers import AdditiveRanker, Decision, FirstRanker, NearestRanker, RandomRanker, RankRequest
from tools.evaluator import Metric
from tools.spaces import nb201_space

POOL = ["333132", "100010", "444444", "010001", "301020", "000100", "223311", "120403"]


def request(pool: list[str], k: int, seed: int = 0) -> RankRequest:
    history = [Observation(0, "333333", 90.0, "ok")]
    return RankRequest(nb201_space(), Metric("val_acc"), history, list(pool), k, random.Random(seed))


@pytest.mark.parametrize(("pool_size", "k"), [(8, 3), (8, 8), (8, 1), (2, 5), (0, 3), (5, 0)])
@pytest.mark.parametrize("ranker_class", [FirstRanker, RandomRanker, AdditiveRanker, NearestRanker])
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


def test_additive_ranker_picks_by_per_slot_means():
    # Slot 0 decides: option 4 scored 95 and 93, option 0 scored 60; slot 1..5 carry no signal.
    history = [
        Observation(0, "411111", 95.0, "ok"),
        Observation(1, "422222", 93.0, "ok"),
        Observation(2, "011111", 60.0, "ok"),
        Observation(3, "022222", 62.0, "ok"),
        Observation(4, "100000", None, "failed"),
    ]
    pool = ["012121", "412121", "321212"]  # option 3 in slot 0 is unseen: the overall mean
    decision = AdditiveRanker().rank(RankRequest(nb201_space(), Metric("val_acc"), history, pool, 2, random.Random(0)))
    assert decision.chosen == ["412121", "321212"]
    lower = Metric("loss", maximize=False)  # utilities flip with the metric's direction
    assert AdditiveRanker().rank(RankRequest(nb201_space(), lower, history, pool, 1, random.Random(0))).chosen == [
        "012121"
    ]


def test_nearest_ranker_picks_the_candidate_nearest_the_best_codes():
    history = [
        Observation(0, "411111", 95.0, "ok"),
        Observation(1, "022222", 60.0, "ok"),
        Observation(2, "033333", 62.0, "ok"),
        Observation(3, "100000", None, "failed"),
    ]
    pool = ["022223", "411112", "333333"]  # next to the worst, to the best, to the middle one
    decision = NearestRanker().rank(RankRequest(nb201_space(), Metric("val_acc"), history, pool, 2, random.Random(0)))
    assert decision.chosen == ["411112", "333333"]
    lower = Metric("loss", maximize=False)  # utilities flip with the metric's direction
    assert NearestRanker().rank(RankRequest(nb201_space(), lower, history, pool, 1, random.Random(0))).chosen == [
        "022223"
    ]


def test_close_is_harmless():
    for ranker in (FirstRanker(), RandomRanker(), AdditiveRanker(), NearestRanker()):
        assert ranker.close() is None
