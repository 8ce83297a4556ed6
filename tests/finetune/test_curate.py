"""Curation: pruning-based subspace sampling, labels, determinism, the no-pruning ablation, NB201 refusal."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest

from finetune.curate import (
    CurationOptions,
    curate,
    draw_architectures,
    make_samples,
    mix_weights,
    search_draw,
    subspace_pool,
)
from finetune.domains import DomainError, load_domain
from prompts.choice import parse_pick, tag, untag
from prompts.grade import unscored
from prompts.near import distance, unsymbol
from tests.finetune.helpers import grid_table_domain, parse_compact, synthetic_domains
from tools.ncode import prune, to_indices

OPTIONS = CurationOptions(min_archs=100, max_archs=200, candidates=10)


@pytest.fixture(scope="module")
def table():
    return grid_table_domain(slots=5, options=4)  # 1024 rows


@pytest.fixture(scope="module")
def landscapes():
    return [d for d in synthetic_domains(40) if d.space.size() >= 5000]


@pytest.fixture(scope="module")
def cora():
    return load_domain("nbg:cora")[0]


def sample_codes(sample: dict) -> tuple[list[str], list[str]]:
    history, candidates = parse_compact(sample["messages"][0]["content"])
    return [code for code, _ in history], candidates


def constant_slots(codes: list[str]) -> int:
    return sum(len({code[i] for code in codes}) == 1 for i in range(len(codes[0])))


def test_sizes_and_label_is_the_best_candidate_by_the_domains_score(table, cora):
    for domain in (table, cora):
        rng = random.Random(3)
        for _ in range(20):
            [sample] = make_samples(domain, rng, OPTIONS)
            history, candidates = sample_codes(sample)
            assert len(candidates) == OPTIONS.candidates
            assert len(history) == sample["history"] >= 2
            assert not set(history) & set(candidates)
            assert len(set(history + candidates)) == len(history) + len(candidates)  # distinct architectures
            scores = {code: domain.score(code) for code in candidates}
            best = max(candidates, key=lambda code: domain.metric.utility(scores[code]))
            assert sample["answer"] == best
            assert sample["answer"] in candidates


def test_history_sizes_follow_min_and_max_archs_when_the_space_is_big_enough(landscapes):
    options = CurationOptions(min_archs=30, max_archs=40, candidates=10, prune=False)
    rng = random.Random(0)
    for domain in landscapes[:5]:
        [sample] = make_samples(domain, rng, options)
        assert 20 <= sample["history"] <= 30


def test_pruning_freezes_slots_and_the_ablation_draws_from_the_whole_space(landscapes):
    """Each slot is frozen with p=0.5, so about half the slots of a pruned sample never vary;
    without pruning, 100+ codes leave no slot constant."""
    pruned_rng, whole_rng = random.Random(1), random.Random(1)
    frozen_share, whole_constant = [], 0
    for domain in landscapes:
        made = []
        while not made:  # a pruned subspace can be too small for a sample; curate() draws again
            made = make_samples(domain, pruned_rng, OPTIONS)
        [pruned] = made
        [whole] = make_samples(domain, whole_rng, CurationOptions(prune=False))
        codes = [c for part in sample_codes(pruned) for c in part]
        frozen_share.append(constant_slots(codes) / domain.space.length)
        whole_codes = [c for part in sample_codes(whole) for c in part]
        assert len(whole_codes) >= 100
        whole_constant += constant_slots(whole_codes)
    assert 0.3 < sum(frozen_share) / len(frozen_share) < 0.9
    assert whole_constant == 0


def test_drawn_codes_lie_in_the_pruned_subspace(table, landscapes):
    rng = random.Random(2)
    for domain in (table, *landscapes[:5]):
        for _ in range(10):
            space = prune(domain.space, rng)
            for code in draw_architectures(domain, space, 50, rng):
                assert all(i in space.choices(s) for s, i in enumerate(to_indices(domain.space, code)))


def test_vectorised_subspace_filter_matches_the_plain_one(cora, table):
    rng = random.Random(4)
    for domain in (cora, table):
        assert tuple(subspace_pool(domain, domain.space)) == domain.codes  # no pruning: every code
        for _ in range(20):
            space = prune(domain.space, rng)
            plain = [
                code
                for code in domain.codes
                if all(i in space.choices(s) for s, i in enumerate(to_indices(domain.space, code)))
            ]
            assert list(subspace_pool(domain, space)) == plain


def test_small_table_subspaces_fall_back_to_the_whole_table():
    small = grid_table_domain("small", slots=3, options=3)  # 27 rows
    rng = random.Random(0)
    options = CurationOptions(min_archs=20, max_archs=27, candidates=5)
    samples = [make_samples(small, rng, options) for _ in range(10)]
    assert all(len(s) == 1 and s[0]["history"] + 5 >= 7 for s in samples)


def test_deterministic_by_seed(landscapes, table):
    domains = [table, *landscapes[:6]]
    options = CurationOptions(min_archs=20, max_archs=40, candidates=5)
    first = curate(domains, 15, seed=7, options=options)
    assert curate(domains, 15, seed=7, options=options) == first
    assert curate(domains, 15, seed=8, options=options) != first
    assert curate(domains, 15, seed=7, options=CurationOptions(20, 40, 5, prune=False)) != first


def test_mix_weights_split_tables_and_synthetic(table, landscapes):
    domains = [table, *landscapes[:4]]
    weights = mix_weights(domains, 0.25)
    assert weights[0] == pytest.approx(0.75) and sum(weights[1:]) == pytest.approx(0.25)
    assert mix_weights(landscapes) is None and mix_weights([table]) is None


def test_history_cap_and_paper_format(table):
    rng = random.Random(5)
    [capped] = make_samples(table, rng, CurationOptions(history_cap=7, prune=False))
    history, candidates = parse_compact(capped["messages"][0]["content"])
    assert len(history) == 7 < capped["history"] and len(candidates) == 10
    [paper] = make_samples(table, rng, CurationOptions(prompt_format="paper"))
    assert [m["role"] for m in paper["messages"]] == ["user"]
    assert paper["messages"][0]["content"].count("NCode: ") == paper["history"]


@pytest.mark.parametrize(
    "spec", ["nb201", "NB201", "NAS-Bench-201", "nas_bench_201", "nasbench201", "nbg:nb201", "tb101:201"]
)
def test_nas_bench_201_is_refused(spec):
    with pytest.raises(DomainError, match="NAS-Bench-201"):
        load_domain(spec)


def test_choice_format_grades_every_label_by_its_place_among_the_candidates(table):
    options = CurationOptions(min_archs=30, max_archs=40, candidates=8, prompt_format="choice")
    rng = random.Random(5)
    for _ in range(10):
        [sample] = make_samples(table, rng, options)
        content = sample["messages"][0]["content"]
        labelled = {untag(code): label for code, label in re.findall(r"([^;:,=]+)=([A-Z]);", content)}
        assert list(labelled) == sample["candidates"] and len(labelled) == 8
        assert "".join(sample["answer"][0::2]) == "".join(labelled.values())
        scores = [table.score(code) for code in sample["candidates"]]
        grades = [int(grade) for grade in sample["answer"][1::2]]
        assert sorted(range(8), key=lambda i: grades[i]) == sorted(range(8), key=lambda i: scores[i])
        assert grades[sample["ranking"][0]] == 9 and min(grades) == 0
        pick = parse_pick(sample["answer"], sample["candidates"], rng)
        assert grades[sample["candidates"].index(pick)] == 9
        assert sample["task"] == "rank"


def test_generation_share_asks_for_the_best_held_out_code(table):
    options = CurationOptions(min_archs=30, max_archs=40, prompt_format="choice", generation_share=0.5)
    samples = curate([table], 60, seed=2, options=options)
    generation = [s for s in samples if s["task"] == "generate"]
    assert 15 <= len(generation) <= 45, "about half the samples should ask for a new code"
    for sample in generation:
        content = sample["messages"][0]["content"]
        assert "Candidates" not in content and content.startswith("Design codes")
        history = [untag(code) for code in re.findall(r"[0-9]:([^,]+),", content)]
        assert len(history) == sample["history"] and untag(sample["answer"]) not in history
        best = max(sample["candidates"], key=lambda code: table.metric.utility(table.score(code)))
        assert sample["answer"] == tag(best)


def test_grade_format_makes_one_example_per_candidate_on_the_shown_historys_scale(table):
    options = CurationOptions(30, 60, 6, prune=False, prompt_format="grade", history_cap=10)
    samples = curate([table], 60, seed=4, options=options)
    assert len(samples) == 60 and {s["task"] for s in samples} == {"grade"}
    draws: dict[int, list[dict]] = {}
    for sample in samples:
        draws.setdefault(sample["group"], []).append(sample)
    assert all(len(rows) == 6 for rows in draws.values())
    for rows in draws.values():
        history = unscored(rows[0]["messages"][0]["content"])
        assert len(history) == 10 < rows[0]["history"]  # capped, and spread down to the worst
        shown = {code: grade for code, grade in history}
        assert max(shown.values()) == 9 and min(shown.values()) == 0
        for row in rows:
            shared, asked = row["messages"][0]["content"].split("Code: ")
            assert shared == rows[0]["messages"][0]["content"].split("Code: ")[0]  # one history per draw
            [code] = row["candidates"]
            assert untag(asked) == code
            # the answer is the candidate's score on the shown history's scale (clipped): a shown
            # code that is worse never has a higher grade, a better one never a lower grade
            utility = table.metric.utility(table.score(code))
            for seen, grade in shown.items():
                if table.metric.utility(table.score(seen)) < utility:
                    assert grade <= int(row["answer"])
                if table.metric.utility(table.score(seen)) > utility:
                    assert grade >= int(row["answer"])


def test_small_synthetic_spaces_are_drawn_with_repeats():
    [domain] = load_domain("synthetic:1:1-1", seed=0)
    assert domain.space.length == 1
    codes = draw_architectures(domain, domain.space, 40, random.Random(0))
    assert len(codes) == 40 and len(set(codes)) <= len(domain.space.slots[0].options) < 40


def test_near_format_grades_each_candidate_by_the_share_of_the_history_it_beats(table):
    options = CurationOptions(30, 60, 6, prune=False, prompt_format="near", history_cap=10)
    samples = curate([table], 60, seed=4, options=options)
    assert len(samples) == 60 and {s["task"] for s in samples} == {"grade"}
    for row in samples:
        shown = unsymbol(row["messages"][0]["content"])
        assert len(shown) == 10 < row["history"] and [gap for gap, _ in shown] == sorted(gap for gap, _ in shown)
        assert all(0 <= grade <= 9 and 0 <= gap <= table.space.length for gap, grade in shown)
        assert row["answer"] in "0123456789" and len(row["answer"]) == 1
    draws: dict[int, list[tuple[float, int]]] = {}
    for row in samples:
        draws.setdefault(row["group"], []).append((table.score(row["candidates"][0]), int(row["answer"])))
    for rows in draws.values():  # one scale per draw: a better candidate never gets a lower grade
        assert [answer for _, answer in sorted(rows)] == sorted(answer for _, answer in rows)
    assert len({row["answer"] for row in samples}) >= 5


def test_slot_weighting_changes_what_the_near_prompts_show_not_what_is_drawn_or_answered(table):
    plain = CurationOptions(30, 60, 6, prune=False, prompt_format="near", history_cap=10)
    weighted = curate([table], 60, seed=4, options=replace(plain, slot_weighting=1.0))
    plain_samples = curate([table], 60, seed=4, options=plain)
    assert [(s["candidates"], s["answer"]) for s in weighted] == [(s["candidates"], s["answer"]) for s in plain_samples]
    assert sum(w["messages"] != p["messages"] for w, p in zip(weighted, plain_samples, strict=True)) > 30


@pytest.mark.parametrize("kind", ["table", "landscape"])
def test_search_draws_look_like_a_mixed_pool_search(kind, table, landscapes):
    domain = table if kind == "table" else landscapes[0]
    for seed in range(5):
        history, pool = search_draw(domain, 60, 10, random.Random(seed))
        assert len(history) == 60 == len(set(history)) and len(pool) == 10 == len(set(pool))
        assert not set(pool) & set(history) and all(domain.score(code) is not None for code in history + pool)
        top = sorted(history, key=lambda code: -domain.metric.utility(domain.score(code)))[:10]
        near_top = [code for code in pool if min(distance(code, best) for best in top) == 1]
        assert len(near_top) >= 4  # half the pool neighbours the best codes (a random code rarely does)
    options = CurationOptions(30, 60, 6, prompt_format="near", history_cap=10, search_share=1.0)
    samples = curate([domain], 30, seed=1, options=options)
    assert len(samples) == 30 and all(len(unsymbol(s["messages"][0]["content"])) == 10 for s in samples)
