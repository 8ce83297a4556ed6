"""Proposers: the shared contract, then what each one specifically promises."""

from __future__ import annotations

import csv
import itertools
import random
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from agent.config import SearchConfig
from agent.runs.store import Observation
from agent.strategies.proposers import (
    PROPOSERS,
    EvolutionProposer,
    GPProposer,
    GuidedMixedProposer,
    LocalSearchProposer,
    MixedProposer,
    MutationProposer,
    PortfolioProposer,
    ProposalContext,
    RandomProposer,
    TPEProposer,
    all_codes,
    known_feasible,
    local_search_centre,
    nearest,
    repaired,
    repaired_pool,
)
from tools.evaluator import Metric
from tools.ncode import SearchSpace, Slot, from_indices, is_valid, neighbours, normalize, sample, to_indices
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
    return PROPOSERS[name](SearchConfig(seed=seed))


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
    gp_turn = name == "portfolio" and history_size == 40  # 40 evaluations: the GP's turn (every 3rd from the 10th)
    assert len(codes) == (1 if gp_turn else 10)  # plenty remain
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


@pytest.mark.parametrize("guide", [GPProposer, TPEProposer])
def test_guided_mixed_pool_holds_the_guides_suggestion_once_it_has_its_start_up_scores(guide):
    space = nb201_space()
    history = make_history(space, 12, seed=4)
    pool = GuidedMixedProposer(random_fraction=0.5, guide=guide()).propose(context(space, history, 5), 10)
    suggestion = guide().propose(context(space, history, 5), 1)  # the same rng state: the same suggestion
    assert len(pool) == len(set(pool)) == 10
    assert set(suggestion) <= set(pool)
    rest = MixedProposer(random_fraction=0.5).propose(context(space, history, 5, extra_seen=suggestion), 9)
    assert set(pool) - set(suggestion) != set(rest)  # the guide consumed rng draws, so the rest differs...
    assert all(is_valid(space, code) for code in pool)  # ...but stays a valid mixed pool (contract tests)


@pytest.mark.parametrize("guide", [GPProposer, TPEProposer])
def test_guided_mixed_pool_is_a_mixed_pool_until_the_guide_can_fit(guide):
    space = nb201_space()
    history = make_history(space, 9, seed=4)  # one score short of the guides' 10 start-up trials
    guided = GuidedMixedProposer(random_fraction=0.5, guide=guide()).propose(context(space, history, 6), 10)
    assert set(guided) == set(MixedProposer(random_fraction=0.5).propose(context(space, history, 6), 10))


def test_guided_mixed_pools_are_named_by_their_guide():
    assert [PROPOSERS[name](SearchConfig()).name for name in ("mixed-gp", "mixed-tpe")] == ["mixed-gp", "mixed-tpe"]


def test_portfolio_gives_the_gp_every_third_step_once_it_has_its_start_up_scores():
    space = nb201_space()
    for size in range(8, 20):
        history = make_history(space, size, seed=4)
        pool = PortfolioProposer(random_fraction=0.5, every=3).propose(context(space, history, 5), 10)
        if size >= 10 and (size - 10) % 3 == 0:
            assert pool == GPProposer().propose(context(space, history, 5), 1), size  # the GP's code alone
        else:
            assert pool == MixedProposer(random_fraction=0.5).propose(context(space, history, 5), 10), size


def test_portfolio_waits_for_the_gp_start_up_scores_when_evaluations_fail():
    space = nb201_space()
    history = make_history(space, 13, seed=4, failed_every=4)  # 13 evaluations, 10 scores: not yet on 13
    assert sum(o.score is not None for o in history) == 10
    assert len(PortfolioProposer(random_fraction=0.5, every=3).propose(context(space, history, 5), 10)) == 1
    history = make_history(space, 10, seed=4, failed_every=4)  # a turn by count, but 8 scores: the mixed pool
    assert len(PortfolioProposer(random_fraction=0.5, every=3).propose(context(space, history, 5), 10)) == 10


def test_mixed_rejects_a_bad_fraction():
    with pytest.raises(ValueError, match="random fraction"):
        MixedProposer(random_fraction=1.5)


def test_mutation_proposer_uses_the_direction_of_the_metric():
    space = nb201_space()
    history = make_history(space, 40, seed=8)
    worst = [o.ncode for o in sorted(history, key=lambda o: o.score)[:3]]
    ctx = ProposalContext(space, Metric("error", maximize=False), history, {o.ncode for o in history}, random.Random(0))
    children = MutationProposer(top=3).propose(ctx, 5)
    assert len(children) == 5
    assert all(any(hamming(child, parent) == 1 for parent in worst) for child in children)


def test_tpe_skips_seen_codes():
    space = SearchSpace("small", tuple(Slot(f"s{i}", (0, 1, 2)) for i in range(3)))
    every = [from_indices((a, b, c)) for a in range(3) for b in range(3) for c in range(3)]
    history = [Observation(i, code, float(sum(to_indices(space, code))), "ok") for i, code in enumerate(every[:20])]
    proposals = TPEProposer().propose(context(space, history, 0), 7)
    assert sorted(proposals) == sorted(every[20:])
    pending = set(every[20:24])
    proposals = TPEProposer().propose(context(space, history, 0, pending), 7)
    assert sorted(proposals) == sorted(every[24:])


def grid_space() -> SearchSpace:
    return SearchSpace("grid", tuple(Slot(f"s{i}", (0, 1, 2, 3)) for i in range(6)))


def table_of(space: SearchSpace, codes) -> SearchSpace:
    return replace(space, members=frozenset(codes))


def test_mutations_on_a_sparse_table_are_the_nearest_unseen_members_of_the_best():
    """Few members of a partial table are one slot apart: a child is an unseen member nearest its parent, not a
    random one (the pool would otherwise turn random)."""
    space = grid_space()
    rows = random.Random(1).sample(all_codes(space), 60)  # 60 of 4,096: one-slot neighbours are rare
    table = table_of(space, rows)
    history = make_history(table, 12, seed=4)
    best = [code for _, code in sorted(((o.score, o.ncode) for o in history), reverse=True)[:3]]
    seen = {o.ncode for o in history}
    for seed in range(5):
        children = MutationProposer(top=3).propose(context(table, history, seed), 6)
        assert len(set(children)) == 6 and set(children) <= table.members and not set(children) & seen
        free = set(table.members - seen)
        for child in children:  # each is as near a parent as any member not yet seen or picked
            assert any(hamming(child, parent) == min(hamming(c, parent) for c in free) for parent in best)
            free.remove(child)
    assert sum(any(hamming(c, p) == 1 for p in best) for c in table.members - seen) < 6  # not one-slot mutations


@pytest.mark.parametrize("history_size", [0, 5, 40])
def test_tpe_on_a_sparse_table_proposes_only_unseen_members(history_size):
    space = grid_space()
    rows = random.Random(0).sample(all_codes(space), 300)
    table = table_of(space, rows)
    history = make_history(table, history_size, seed=2)
    pending = set(rows[:5]) - {o.ncode for o in history}
    for seed in range(5):
        proposals = TPEProposer().propose(context(table, history, seed, pending), 10)
        assert len(proposals) == len(set(proposals)) == 10
        assert all(code in table.members for code in proposals)
        assert not set(proposals) & ({o.ncode for o in history} | pending)
    few = table_of(space, rows[:12])
    assert sorted(TPEProposer().propose(context(few, make_history(few, 9, seed=3), 0), 10)) == sorted(
        set(rows[:12]) - {o.ncode for o in make_history(few, 9, seed=3)}
    )


@pytest.mark.parametrize("history_size", [5, 20, 40])
def test_tpe_on_a_complete_table_is_tpe(history_size):
    """The suggestion stream is the one TPE makes on the product space: unseen suggestions are kept, in order;
    a seen one (TPE may repeat its best) becomes its nearest unseen member, where the product space asks again."""
    space = grid_space()
    table = table_of(space, all_codes(space))
    history = make_history(space, history_size, seed=history_size)
    seen = {o.ncode for o in history}
    for seed in range(8):
        on_table = TPEProposer().propose(context(table, history, seed), 5)
        asked_again = TPEProposer().propose(context(space, history, seed), 5)
        kept = [code for code in on_table if code in asked_again]
        assert kept == asked_again[: len(kept)]
        for position, code in enumerate(on_table):
            if code not in kept:
                assert any(hamming(code, other) == 1 for other in seen | set(on_table[:position])), code
        if history_size < 10:  # TPE's random start-up: nothing is seen twice
            assert on_table == asked_again
        assert on_table != RandomProposer().propose(context(table, history, seed), 5)


def test_nearest_takes_the_closest_code_and_breaks_ties_with_the_rng():
    codes = ["0110", "1111", "2100", "2222"]
    assert nearest("1110", codes, random.Random(0)) == "1111"
    assert nearest("2222", codes, random.Random(0)) == "2222"
    assert {nearest("0100", codes, random.Random(seed)) for seed in range(20)} == {"0110", "2100"}


def write_complete_table(root: Path, slots: int = 5, options: int = 4) -> tuple[Path, Path]:
    """A YAML space and a CSV row for every code: an additive accuracy plus an interaction of the first two slots."""
    rng = random.Random(0)
    gains = [[rng.random() for _ in range(options)] for _ in range(slots)]
    pairs = [[rng.random() for _ in range(options)] for _ in range(options)]
    space_file, data = root / "space.yaml", root / "results.csv"
    slot_list = [{"name": f"x{i}", "options": list(range(options))} for i in range(slots)]
    space_file.write_text(yaml.safe_dump({"name": "synthetic", "slots": slot_list}))
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ncode", "acc"])
        for choice in itertools.product(range(options), repeat=slots):
            acc = sum(gain[c] for gain, c in zip(gains, choice, strict=True)) + 0.3 * pairs[choice[0]][choice[1]]
            writer.writerow([from_indices(choice), f"{acc:.6f}"])
    return space_file, data


@pytest.mark.parametrize("baseline", ["tpe", "gp", "local-search"])
def test_baselines_beat_random_search_on_a_complete_table(tmp_path, baseline):
    """Real searches through the CLI: each baseline must search the table (TPE used to fall back to random
    search there)."""
    from agent.cli.main import main

    space_file, data = write_complete_table(tmp_path)
    task = ["--task", "table", "--space", str(space_file), "--data", str(data), "--metric", "acc", "--budget", "30"]

    def search(ranker: str, seed: int) -> tuple[list[str], float]:
        db = tmp_path / f"{ranker}-{seed}.db"
        assert main([*task, "--ranker", ranker, "--seed", str(seed), "--db", str(db), "--quiet"]) == 0
        with sqlite3.connect(db) as connection:
            codes = [code for (code,) in connection.execute("SELECT ncode FROM evaluations ORDER BY id")]
            (best,) = connection.execute("SELECT best_score FROM runs").fetchone()
        assert len(set(codes)) == 30
        return codes, best

    seeds = range(8)
    tpe, rs = ([search(ranker, seed) for seed in seeds] for ranker in (baseline, "random"))
    assert all(t_codes != r_codes for (t_codes, _), (r_codes, _) in zip(tpe, rs, strict=True))
    mean_tpe, mean_rs = (sum(best for _, best in runs) / len(seeds) for runs in (tpe, rs))
    assert mean_tpe > mean_rs + 0.15, f"mean best of {baseline} {mean_tpe:.4f}, of random search {mean_rs:.4f}"


# local search -------------------------------------------------------------------------------------


def line_space() -> SearchSpace:
    """Three slots of three options: each code has 6 neighbours."""
    return SearchSpace("line", tuple(Slot(f"s{i}", (0, 1, 2)) for i in range(3)))


def observed(scores: dict[str, float]) -> list[Observation]:
    return [Observation(i, code, score, "ok") for i, (code, score) in enumerate(scores.items())]


def test_local_search_starts_random_then_explores_the_best_initial_codes_neighbourhood():
    space = line_space()
    proposer = LocalSearchProposer(initial=3)
    start = observed({"000": 1.0, "111": 5.0, "222": 2.0})
    assert local_search_centre(context(space, start[:2]), 3, False) is None  # still sampling at random
    assert local_search_centre(context(space, start), 3, False) == "111"
    for seed in range(5):
        (code,) = proposer.propose(context(space, start, seed), 1)
        assert hamming(code, "111") == 1
    pool = proposer.propose(context(space, start, 0), 10)
    assert sorted(pool[:6]) == neighbours(space, "111")  # every neighbour, then random fill
    assert len(pool) == 10 and not set(pool[6:]) & set(neighbours(space, "111"))


def test_local_search_moves_to_the_best_neighbour_once_the_neighbourhood_is_used_up():
    space = line_space()
    around = neighbours(space, "111")
    history = observed({"000": 1.0, "111": 5.0, "222": 2.0} | {code: 4.0 for code in around[:-1]})
    assert local_search_centre(context(space, history), 3, False) == "111"  # one neighbour left
    better = observed({"000": 1.0, "111": 5.0, "222": 2.0} | {code: 4.0 for code in around} | {around[2]: 6.0})
    assert local_search_centre(context(space, better), 3, False) == around[2]
    (code,) = LocalSearchProposer(initial=3).propose(context(space, better), 1)
    assert hamming(code, around[2]) == 1


def test_local_search_restarts_from_a_random_code_at_a_local_optimum():
    space = line_space()
    stuck = {"000": 1.0, "111": 5.0, "222": 2.0} | {code: 3.0 for code in neighbours(space, "111")}
    assert local_search_centre(context(space, observed(stuck)), 3, False) is None  # the next code is random
    restart = next(code for code in all_codes(space) if code not in stuck)
    assert local_search_centre(context(space, observed(stuck | {restart: 0.5})), 3, False) == restart


def test_local_search_with_first_improvement_moves_at_once():
    space = line_space()
    first = neighbours(space, "111")[0]
    history = observed({"000": 1.0, "111": 5.0, "222": 2.0, first: 6.0})
    assert local_search_centre(context(space, history), 3, True) == first
    assert local_search_centre(context(space, history), 3, False) == "111"


def test_local_search_follows_the_direction_of_the_metric():
    space = line_space()
    history = observed({"000": 1.0, "111": 5.0, "222": 2.0})
    seen = {"000", "111", "222"}
    minimizing = ProposalContext(space, Metric("error", maximize=False), history, seen, random.Random(0))
    assert local_search_centre(minimizing, 3, False) == "000"


def test_local_search_rejects_no_initial_codes():
    with pytest.raises(ValueError, match="at least 1 initial"):
        LocalSearchProposer(initial=0)


@pytest.mark.parametrize("proposer", [TPEProposer, GPProposer])
@pytest.mark.parametrize("history_size", [5, 40])
def test_optuna_proposers_are_pure_functions_of_the_history_and_the_rng(proposer, history_size):
    """What resume relies on: a new proposer, or one that proposed before, proposes the same again."""
    space = nb201_space()
    history = make_history(space, history_size, seed=1)
    first = proposer().propose(context(space, history, 3), 4)
    used = proposer()
    for seed in range(2):
        used.propose(context(space, history[: history_size // 2], seed), 4)
    assert used.propose(context(space, history, 3), 4) == first
    assert proposer().propose(context(space, history, 3), 4) == first
    if history_size < 10:  # random start-up; a fitted GP's acquisition maximum need not depend on the seed
        assert proposer().propose(context(space, history, 4), 4) != first


@pytest.mark.parametrize("name", ["nsga2", "tpe", "gp"])
def test_optuna_baselines_read_every_objective_and_the_infeasible(name):
    """In a run of several objectives the Optuna study they ask holds each objective as a utility (a minimised one
    negated; TPE is then multi-objective TPE), infeasible results as a broken constraint with their true values,
    and for NSGA-II the generation a sequential run would have given each trial."""
    from tools.objectives import Objective

    space = tiny_space()
    history = [
        Observation(0, "00", 0.5, "ok", values=(0.5, 10.0)),
        Observation(1, "01", 0.7, "infeasible", values=(0.7, 99.0)),
        Observation(2, "10", None, "failed"),
        Observation(3, "11", 0.6, "ok", values=(0.6, 5.0)),
    ]
    objectives = (Objective("acc"), Objective("params", maximize=False))
    proposer = build(name)
    study, _ = proposer._study(ProposalContext(space, METRIC, history, set(), random.Random(0), objectives))
    trials = study.trials
    assert [t.values for t in trials] == [[0.5, -10.0], [0.7, -99.0], [0.6, -5.0]]
    assert [t.constraints for t in trials] == [{"infeasible": 0.0}, {"infeasible": 1.0}, {"infeasible": 0.0}]
    if name == "nsga2":
        assert {t.system_attrs["NSGAIISampler:generation"] for t in trials} == {0}


def test_known_feasible_draws_again_only_while_codes_are_rejected():
    calls: list[tuple[set[str], int]] = []
    codes = iter(["a1", "b9", "c2", "d8", "e3", "f4"])

    def draw(avoid: set[str], count: int) -> list[str]:
        calls.append((set(avoid), count))
        return [next(codes) for _ in range(count)]

    over_5 = lambda code: [f"{code} > 5"] if int(code[1]) > 5 else []  # noqa: E731
    found, rejected = known_feasible(draw, 3, over_5, max_drawn=100)
    assert found == ["a1", "c2", "e3"] and rejected == [("b9", "b9 > 5"), ("d8", "d8 > 5")]
    assert calls == [(set(), 3), ({"a1", "b9", "c2"}, 1), ({"a1", "b9", "c2", "d8"}, 1)]
    calls.clear()
    assert known_feasible(lambda avoid, count: draw(avoid, 1), 3, over_5, 100) == (["f4"], [])
    assert len(calls) == 1, "a draw with nothing rejected is what the proposer gives, even when short"
    assert known_feasible(lambda avoid, count: ["z9"] if "z9" not in avoid else [], 1, over_5, 100) == (
        [],
        [("z9", "z9 > 5")],
    )


def digit_sum_over(limit: int, space: SearchSpace) -> Callable[[str], float]:
    """A known-before excess: how far a code's option indices add up past ``limit``."""
    return lambda code: max(0, sum(to_indices(space, code)) - limit) / limit


def test_a_repair_walks_a_code_one_slot_at_a_time_just_inside_a_known_limit():
    space = SearchSpace("ranks", tuple(Slot(f"r{i}", (4, 8, 16)) for i in range(24)))
    excess = digit_sum_over(10, space)
    rng = random.Random(0)
    draws = [sample(space, rng) for _ in range(20)]
    assert all(excess(code) > 0 for code in draws), "random draws break the limit (mean digit sum 24)"
    for code in draws:
        fixed = repaired(code, space, excess, random.Random(1))
        indices = to_indices(space, fixed)
        assert 9 <= sum(indices) <= 10, "it stops at the first code inside: one move (at most 2) from the limit"
        assert all(a <= b for a, b in zip(indices, to_indices(space, code), strict=True)), "only moves that help"
    assert repaired(draws[0], space, excess, random.Random(1)) == repaired(draws[0], space, excess, random.Random(1))
    assert repaired(draws[0], space, digit_sum_over(10, space), random.Random(2)) != repaired(
        draws[0], space, excess, random.Random(1)
    ), "the rng orders the moves, so a pool of repairs spreads out"
    assert repaired("0" * 24, space, excess, rng) == "0" * 24, "a code inside is kept as it is"


def test_a_repair_that_no_move_helps_gives_up_and_the_pool_skips_the_seen_and_twins():
    space = SearchSpace("ranks", tuple(Slot(f"r{i}", (4, 8, 16)) for i in range(4)))
    assert repaired("2222", space, lambda code: 1.0, random.Random(0)) is None
    walked: list[str] = []
    out_of_reach = lambda code: walked.append(code) or 1.0  # noqa: E731
    assert repaired_pool(["2222", "1111", "0000", "2020"], 2, space, out_of_reach, set(), random.Random(0)) == []
    assert "1111" in walked and not {"0000", "2020"} & set(walked), "gives up after n walks found no way inside"
    excess = digit_sum_over(1, space)
    pool = repaired_pool(["2000", "0200", "0020", "1000", "0002"], 3, space, excess, {"1000"}, random.Random(0))
    fixed = [to for _, to in pool]
    assert len(fixed) == 3 and len(set(fixed)) == 3 and "1000" not in fixed
    assert all(excess(code) == 0 for code in fixed)
    assert all(excess(source) > 0 and hamming(source, to) == 1 for source, to in pool), (
        "each with the draw it came from"
    )
