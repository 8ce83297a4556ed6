"""NCodes: parsing, round trips, sampling, mutation and the paper's subspace pruning."""

from __future__ import annotations

import itertools
import random

import pytest

from tools.ncode import (
    SYMBOLS,
    InvalidNCode,
    SearchSpace,
    Slot,
    decode,
    encode,
    from_indices,
    is_valid,
    mutate,
    neighbours,
    normalize,
    prune,
    sample,
    to_indices,
    validate,
)
from tools.spaces import hat_space, nb201_space, sam_lora_space


def hamming(left: str, right: str) -> int:
    assert len(left) == len(right)
    return sum(a != b for a, b in zip(left, right, strict=True))


def mixed_space() -> SearchSpace:
    """Slots of 2, 12 (needs letters) and 62 options (every symbol), of assorted option types."""
    return SearchSpace(
        "mixed",
        (
            Slot("flag", (False, True)),
            Slot("width", tuple(range(16, 16 * 13, 16))),
            Slot("token", tuple(f"t{i}" for i in range(62))),
        ),
    )


def wide_space(slots: int = 10, options: int = 20) -> SearchSpace:
    return SearchSpace("wide", tuple(Slot(f"s{i}", tuple(range(options))) for i in range(slots)))


# round trips -------------------------------------------------------------------------------------


def test_symbols_are_62_distinct_characters_digits_then_letters():
    assert len(SYMBOLS) == 62
    assert len(set(SYMBOLS)) == 62
    assert SYMBOLS[:10] == "0123456789"
    assert SYMBOLS[10] == "a"
    assert SYMBOLS[36] == "A"
    assert SYMBOLS[61] == "Z"


def test_from_indices_uses_letters_beyond_nine():
    assert from_indices([0, 9, 10, 11, 35, 36, 61]) == "09abzAZ"


def test_every_code_of_a_space_with_letters_round_trips():
    space = mixed_space()
    assert space.size() == 2 * 12 * 62
    seen = set()
    for indices in itertools.product(*(range(len(slot.options)) for slot in space.slots)):
        code = from_indices(indices)
        assert to_indices(space, code) == indices
        config = decode(space, code)
        assert config == {slot.name: slot.options[i] for slot, i in zip(space.slots, indices, strict=True)}
        assert encode(space, config) == code
        assert encode(space, list(config.values())) == code
        seen.add(code)
    assert len(seen) == space.size()


def test_letters_encode_the_expected_options():
    space = mixed_space()
    assert decode(space, "1bZ") == {"flag": True, "width": 16 * 12, "token": "t61"}
    assert decode(space, "0aA") == {"flag": False, "width": 16 * 11, "token": "t36"}
    assert encode(space, {"flag": True, "width": 16 * 11, "token": "t10"}) == "1aa"


def test_a_slot_may_have_62_options_but_not_63_or_zero():
    SearchSpace("max", (Slot("s", tuple(range(62))),))
    with pytest.raises(ValueError, match="63 options"):
        SearchSpace("too_many", (Slot("s", tuple(range(63))),))
    with pytest.raises(ValueError, match="0 options"):
        SearchSpace("empty_slot", (Slot("s", ()),))
    with pytest.raises(ValueError, match="no slots"):
        SearchSpace("empty", ())


def test_encode_rejects_unknown_option_and_wrong_count_naming_the_slot():
    space = mixed_space()
    with pytest.raises(InvalidNCode, match="'width'") as info:
        encode(space, {"flag": True, "width": 17, "token": "t0"})
    assert "17" in str(info.value)
    with pytest.raises(InvalidNCode, match="3 slots, got 2"):
        encode(space, [True, 16])


# error messages ----------------------------------------------------------------------------------


def test_wrong_length_names_both_lengths():
    space = nb201_space()
    with pytest.raises(InvalidNCode) as info:
        to_indices(space, "333")
    message = str(info.value)
    assert "'333'" in message
    assert "3 symbols" in message
    assert "6 slots" in message
    assert "nb201" in message


def test_bad_symbol_names_slot_and_position():
    space = nb201_space()
    with pytest.raises(InvalidNCode) as info:
        to_indices(space, "33!132")
    message = str(info.value)
    assert "'!'" in message
    assert "position 2" in message
    assert "'edge_2_1'" in message
    assert "0-4" in message


def test_out_of_range_option_names_slot_and_position():
    space = nb201_space()
    with pytest.raises(InvalidNCode) as info:
        validate(space, "333135")
    message = str(info.value)
    assert "'5'" in message
    assert "position 5" in message
    assert "'edge_3_2'" in message
    assert "use 0-4" in message


def test_letter_beyond_a_slots_options_is_out_of_range():
    space = mixed_space()
    validate(space, "1bZ")
    with pytest.raises(InvalidNCode, match=r"position 1 \(slot 'width'\)") as info:
        validate(space, "1cZ")
    assert "0-b" in str(info.value)


def test_non_string_code_is_rejected():
    with pytest.raises(InvalidNCode, match="string"):
        to_indices(nb201_space(), 333132)  # type: ignore[arg-type]


def test_validate_applies_the_rule_and_members():
    space = nb201_space()
    assert validate(space, "333132") == "333132"
    with pytest.raises(InvalidNCode, match="no path"):
        validate(space, "000000")
    assert not is_valid(space, "000000")
    members = SearchSpace("sparse", wide_space(2, 3).slots, members=frozenset({"01", "22"}))
    assert members.size() == 2
    assert is_valid(members, "22")
    with pytest.raises(InvalidNCode, match="not one of the 2 codes"):
        validate(members, "02")


# sampling and mutation ---------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [nb201_space, hat_space, sam_lora_space, mixed_space])
def test_sample_is_always_valid_and_canonical(factory):
    space = factory()
    rng = random.Random(0)
    codes = [sample(space, rng) for _ in range(300)]
    for code in codes:
        assert is_valid(space, code), code
        assert normalize(space, code) == code
    assert len(set(codes)) > 100  # actually random, not one code over and over


def test_sample_never_returns_a_disconnected_nb201_cell():
    space = nb201_space()
    rng = random.Random(1)
    assert all(space.rule.check(space, to_indices(space, sample(space, rng))) is None for _ in range(2000))


def test_sample_from_members_stays_in_members():
    members = frozenset({"00", "12", "21"})
    space = SearchSpace("sparse", wide_space(2, 3).slots, members=members)
    rng = random.Random(0)
    drawn = {sample(space, rng) for _ in range(200)}
    assert drawn == members


def test_sample_raises_when_no_code_is_valid():
    space = nb201_space()
    dead = SearchSpace(space.name, space.slots, space.rule, allowed=((0,),) * 6)  # every edge 'none'
    with pytest.raises(InvalidNCode, match="no valid code"):
        sample(dead, random.Random(0), max_tries=20)


@pytest.mark.parametrize("factory", [nb201_space, sam_lora_space, mixed_space])
def test_mutate_changes_exactly_one_slot_and_stays_valid(factory):
    space = factory()
    rng = random.Random(0)
    for _ in range(300):
        parent = sample(space, rng)
        child = mutate(space, parent, rng)
        assert hamming(parent, child) == 1
        assert is_valid(space, child)


def test_mutate_with_normalization_returns_a_different_canonical_code():
    space = hat_space()
    rng = random.Random(0)
    for _ in range(300):
        parent = sample(space, rng)
        child = mutate(space, parent, rng)
        assert child != parent
        assert is_valid(space, child)
        assert normalize(space, child) == child


def test_mutate_on_members_moves_to_a_neighbouring_member():
    members = frozenset({"00", "01", "22"})
    space = SearchSpace("sparse", wide_space(2, 3).slots, members=members)
    rng = random.Random(0)
    assert {mutate(space, "00", rng) for _ in range(20)} == {"01"}
    assert mutate(space, "22", rng) == "22"  # no member one slot away


@pytest.mark.parametrize("factory", [nb201_space, mixed_space])
def test_neighbours_are_every_valid_one_slot_change(factory):
    space = factory()
    rng = random.Random(1)
    for _ in range(20):
        code = sample(space, rng)
        found = neighbours(space, code)
        assert found == sorted(set(found)) and code not in found
        assert all(hamming(code, other) == 1 and is_valid(space, other) for other in found)
        assert {mutate(space, code, random.Random(seed)) for seed in range(400)} <= set(found)
    size = sum(len(space.choices(i)) - 1 for i in range(space.length))
    if factory is mixed_space:  # no validity rule: every one-slot change counts
        assert len(neighbours(space, "000")) == size


def test_neighbours_after_normalization_are_canonical_and_differ():
    space = hat_space()
    code = sample(space, random.Random(0))
    found = neighbours(space, code)
    assert found and all(normalize(space, other) == other != code for other in found)


def test_neighbours_on_members_are_the_members_one_slot_away():
    rng = random.Random(0)
    every = ["".join(choice) for choice in itertools.product("012", repeat=4)]
    members = frozenset(rng.sample(every, 30))
    space = SearchSpace("sparse", wide_space(4, 3).slots, members=members)
    for code in sorted(members):
        assert neighbours(space, code) == sorted(other for other in members if hamming(code, other) == 1)
    assert neighbours(space, "2222") == sorted(other for other in members if hamming("2222", other) == 1)


def test_mutate_returns_the_code_when_nothing_can_change():
    space = SearchSpace("fixed", (Slot("a", (1,)), Slot("b", (2,))))
    assert mutate(space, "00", random.Random(0)) == "00"


def test_sample_and_mutate_are_deterministic_by_seed():
    space = nb201_space()

    def walk(seed: int) -> list[str]:
        rng = random.Random(seed)
        codes = [sample(space, rng)]
        for _ in range(50):
            codes.append(mutate(space, codes[-1], rng))
        return codes

    assert walk(7) == walk(7)
    assert walk(7) != walk(8)


# pruning -----------------------------------------------------------------------------------------


def test_prune_keeps_a_nonempty_subset_of_each_slot():
    space = mixed_space()
    for seed in range(300):
        pruned = prune(space, random.Random(seed))
        assert pruned.allowed is not None
        assert len(pruned.allowed) == space.length
        assert pruned.slots == space.slots  # codes keep the full space's indices
        for index, allowed in enumerate(pruned.allowed):
            assert allowed, (seed, index)
            assert len(set(allowed)) == len(allowed)
            assert set(allowed) <= set(space.choices(index))
            assert pruned.choices(index) == allowed


def test_prune_freezes_about_half_the_slots_and_drops_about_half_the_options():
    # 20 options per slot: a free slot ends up with a single option with probability ~2e-5,
    # so the share of single-option slots is the share of frozen slots.
    space = wide_space(slots=10, options=20)
    singles = 0
    free_sizes = []
    for seed in range(400):
        for allowed in prune(space, random.Random(seed)).allowed:
            if len(allowed) == 1:
                singles += 1
            else:
                free_sizes.append(len(allowed))
    frozen_share = singles / (400 * space.length)
    assert 0.43 < frozen_share < 0.57
    mean_kept = sum(free_sizes) / len(free_sizes)
    assert 8.0 < mean_kept < 12.0  # each option survives with p=0.5


def test_prune_of_a_pruned_space_narrows_it_further():
    space = wide_space(slots=8, options=10)
    rng = random.Random(3)
    once = prune(space, rng)
    twice = prune(once, rng)
    for first, second in zip(once.allowed, twice.allowed, strict=True):
        assert set(second) <= set(first)
    assert twice.size() <= once.size() <= space.size()


def test_sampling_and_mutating_in_a_pruned_space_stay_in_its_options():
    space = mixed_space()
    for seed in range(100):
        rng = random.Random(seed)
        pruned = prune(space, rng)
        for _ in range(20):
            code = sample(pruned, rng)
            indices = to_indices(pruned, code)
            assert all(i in allowed for i, allowed in zip(indices, pruned.allowed, strict=True))
            child = mutate(pruned, code, rng)
            child_indices = to_indices(pruned, child)
            assert all(i in allowed for i, allowed in zip(child_indices, pruned.allowed, strict=True))


def test_size_counts_the_allowed_options():
    space = wide_space(slots=3, options=5)
    assert space.size() == 125
    pruned = SearchSpace(space.name, space.slots, allowed=((1,), (0, 4), (0, 1, 2)))
    assert pruned.size() == 6
    assert {sample(pruned, random.Random(seed)) for seed in range(300)} == {
        from_indices((1, b, c)) for b in (0, 4) for c in (0, 1, 2)
    }


def test_prune_is_deterministic_by_seed():
    space = sam_lora_space()
    assert prune(space, random.Random(11)) == prune(space, random.Random(11))
    assert len({prune(space, random.Random(seed)).allowed for seed in range(20)}) == 20
