"""Rankers: choose k distinct members of the pool."""

from __future__ import annotations

import functools
import random

import pytest

from agent.config import SearchConfig
from agent.driver import make_ranker
from agent.runs.store import Observation
from agent.strategies.rankers import (
    RANDOM_START,
    AdditiveRanker,
    Decision,
    FirstRanker,
    NearestRanker,
    RandomRanker,
    RandomStart,
    RankRequest,
)
from tools.evaluator import Metric
from tools.spaces import nb201_space

POOL = ["333132", "100010", "444444", "010001", "301020", "000100", "223311", "120403"]


def request(pool: list[str], k: int, seed: int = 0) -> RankRequest:
    history = [Observation(0, "333333", 90.0, "ok")]
    return RankRequest(nb201_space(), Metric("val_acc"), history, list(pool), k, random.Random(seed))


NEAREST_MEAN = functools.partial(NearestRanker, rounded=False)


def random_start() -> RandomStart:
    """A ranker still in its random start (the request's history has one score)."""
    return RandomStart(AdditiveRanker(), scored=5)


@pytest.mark.parametrize(("pool_size", "k"), [(8, 3), (8, 8), (8, 1), (2, 5), (0, 3), (5, 0)])
@pytest.mark.parametrize(
    "ranker_class", [FirstRanker, RandomRanker, AdditiveRanker, NearestRanker, NEAREST_MEAN, random_start]
)
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


def test_random_start_picks_at_random_until_enough_scores_then_lets_the_ranker_pick():
    """FirstRanker always takes the pool's head, so a pick elsewhere in the pool is a random one."""
    scored = [Observation(i, f"00000{i}", 80.0 + i, "ok") for i in range(3)]
    failed = [Observation(3 + i, f"10000{i}", None, "failed") for i in range(4)]

    def picks(history: list[Observation]) -> set[str]:
        starts = [RandomStart(FirstRanker(), scored=3) for _ in range(20)]
        return {
            ranker.rank(RankRequest(nb201_space(), Metric("val_acc"), history, POOL, 1, random.Random(seed))).chosen[0]
            for seed, ranker in enumerate(starts)
        }

    assert len(picks(scored[:2] + failed)) > 3  # two scores (failures count for nothing): still random
    assert picks(scored) == {POOL[0]}  # three: the ranker's own pick, every seed


def test_a_run_with_random_start_picks_its_start_at_random_and_records_who_picked(tmp_path):
    """Through the loop: the first picks are the uniform ones of a random search with the same seed, recorded
    as the random start's; then the ranker's, recorded under the ranker the user chose."""
    from agent.driver import Search

    def run(**options) -> list[str]:
        search = Search(tmp_path / f"{len(list(tmp_path.iterdir()))}.db")
        try:
            result = search.start(SearchConfig(budget=8, seed=3, **options))
            start = options.get("random_start", 0)
            pickers = [d["ranker"] for d in search.store.decisions(result.run_id)]
            assert pickers == [RANDOM_START] * start + [options["ranker"]] * (8 - start)
            return [row["ncode"] for row in search.store.evaluations(result.run_id)]
        finally:
            search.close()

    started = run(ranker="additive", proposer="mixed", random_start=5)
    assert started[:5] == run(ranker="random", proposer="mixed")[:5]
    assert started[5:] != run(ranker="random", proposer="mixed")[5:]
    assert started == run(ranker="additive", proposer="mixed", random_start=5)


ADDITIVE_CASE = (
    # Slot 0 decides: option 4 scored 95 and 93, option 0 scored 60; slot 1..5 carry no signal.
    AdditiveRanker,
    [("411111", 95.0), ("422222", 93.0), ("011111", 60.0), ("022222", 62.0)],
    ["012121", "412121", "321212"],  # option 3 in slot 0 is unseen: the overall mean
    ["412121", "321212"],
    "012121",
)
NEAREST_CASE = (
    NearestRanker,
    [("411111", 95.0), ("022222", 60.0), ("033333", 62.0)],
    ["022223", "411112", "333333"],  # next to the worst, to the best, to the middle one
    ["411112", "333333"],
    "022223",
)


NEAREST_MEAN_CASE = (NEAREST_MEAN, *NEAREST_CASE[1:])


@pytest.mark.parametrize(
    ("ranker", "scored", "pool", "best_two", "best_if_minimised"), [ADDITIVE_CASE, NEAREST_CASE, NEAREST_MEAN_CASE]
)
def test_surrogate_rankers_pick_what_their_model_predicts(ranker, scored, pool, best_two, best_if_minimised):
    history = [Observation(i, code, score, "ok") for i, (code, score) in enumerate(scored)]
    history.append(Observation(len(history), "100000", None, "failed"))
    decision = ranker().rank(RankRequest(nb201_space(), Metric("val_acc"), history, pool, 2, random.Random(0)))
    assert decision.chosen == best_two
    lower = Metric("loss", maximize=False)  # utilities flip with the metric's direction
    assert ranker().rank(RankRequest(nb201_space(), lower, history, pool, 1, random.Random(0))).chosen == [
        best_if_minimised
    ]


def test_close_is_harmless():
    for ranker in (FirstRanker(), RandomRanker(), AdditiveRanker(), NearestRanker(), NEAREST_MEAN()):
        assert ranker.close() is None


# grades 9, 7, 0, 5, 2 (the share of the others each beats)
GRADED = [("411111", 95.0), ("422222", 80.0), ("022222", 60.0), ("033333", 62.0), ("044444", 61.0)]


def test_nearest_mean_orders_what_rounded_grades_tie():
    """Both candidates read as 9 when rounded (8.99 and 8.62): nearest draws between them, nearest-mean
    (the reader of expected grades) takes the nearer one to the best code every time."""
    history = [Observation(i, code, score, "ok") for i, (code, score) in enumerate(GRADED)]
    pool = ["411122", "411112"]

    def picks(ranker: NearestRanker) -> set[str]:
        metric = Metric("val_acc")
        requests = (RankRequest(nb201_space(), metric, history, pool, 1, random.Random(s)) for s in range(20))
        return {ranker.rank(r).chosen[0] for r in requests}

    assert picks(NearestRanker()) == {"411122", "411112"}
    assert picks(NEAREST_MEAN()) == {"411112"}


@pytest.mark.parametrize("name", ["nearest", "nearest-mean"])
def test_nearest_readers_show_history_cap_codes(name):
    """--history-cap sets how many nearest codes a nearest reader weighs, as it sets an LLM's prompt: with one,
    the candidate's grade is its nearest code's (7); with the default 24, every code counts (6.17)."""
    one = make_ranker(SearchConfig(ranker=name, history_cap=1)).predictions(GRADED, ["422223"])
    default = make_ranker(SearchConfig(ranker=name)).predictions(GRADED, ["422223"])
    assert one == [7.0]
    assert default == [6.0] if name == "nearest" else default[0] == pytest.approx(6.166, abs=1e-3)
