"""Numeric and conditional slots: ranges laid out as NCode grids, conditions canonicalised, both stored with a run."""

from __future__ import annotations

import itertools
import random

import pytest

from tools.ncode import (
    MAX_LEVELS,
    InvalidNCode,
    SearchSpace,
    Slot,
    decode,
    encode,
    mutate,
    neighbours,
    normalize,
    sample,
)
from tools.spaces import SpaceFileError, load_space_file, space_from_dict, space_to_dict

HPO_YAML = """\
name: mlp_hpo
slots:
  - {name: lr, low: 1e-4, high: 1e-1, log: true, levels: 4}
  - {name: depth, low: 1, high: 3}
  - {name: width_2, options: [32, 64], when: {depth: [2, 3]}}
  - {name: width_3, low: 16, high: 64, log: true, levels: 3, when: {depth: 3}}
  - {name: act, options: [relu, gelu]}
"""


def hpo_space() -> SearchSpace:
    """The YAML space above, written in Python."""
    return SearchSpace(
        "mlp_hpo",
        [
            Slot.float("lr", 1e-4, 1e-1, log=True, levels=4),
            Slot.int("depth", 1, 3),
            Slot("width_2", [32, 64], when={"depth": [2, 3]}),
            Slot.int("width_3", 16, 64, log=True, levels=3, when={"depth": 3}),
            Slot("act", ["relu", "gelu"]),
        ],
    )


def test_float_range_is_an_ordered_grid_with_both_ends():
    assert Slot.float("lr", 1e-4, 1e-1, log=True, levels=4).options == (1e-4, 1e-3, 1e-2, 1e-1)
    assert Slot.float("p", 0.0, 0.5, levels=6).options == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def test_int_range_every_integer_or_spread_levels():
    assert Slot.int("depth", 1, 4).options == (1, 2, 3, 4)
    assert Slot.int("width", 16, 256, log=True, levels=5).options == (16, 32, 64, 128, 256)
    assert len(Slot.int("n", 0, MAX_LEVELS - 1).options) == MAX_LEVELS


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Slot.float("lr", 0.1, 0.1), "low 0.1 must be below high 0.1"),
        (lambda: Slot.int("n", 0, 100), "holds 101 integers .* give levels: N"),
        (lambda: Slot.float("lr", 1e-4, 1.0, levels=63), "levels 63 must be 2 to 62"),
        (lambda: Slot.float("lr", 0.0, 1.0, log=True), "a log range needs low > 0"),
        (lambda: Slot.int("n", 1, 100, log=True), "a log int range needs levels"),
    ],
)
def test_bad_ranges_name_the_slot_and_the_fix(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_yaml_and_python_spaces_are_the_same_and_round_trip(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(HPO_YAML)
    loaded = load_space_file(path)
    assert loaded == hpo_space()
    assert space_from_dict(space_to_dict(loaded)) == loaded


def test_inactive_slots_are_absent_when_decoded_and_canonical_in_codes():
    space = hpo_space()
    assert decode(space, "10011") == {"lr": 1e-3, "depth": 1, "act": "gelu"}
    assert normalize(space, "10121") == "10001"  # depth 1: widths unused, written as option 0
    assert decode(space, "22121") == {"lr": 1e-2, "depth": 3, "width_2": 64, "width_3": 64, "act": "gelu"}
    assert encode(space, {"lr": 1e-3, "depth": 1, "act": "gelu"}) == "10001"
    assert encode(space, {"lr": 1e-3, "depth": 1, "width_2": 64, "act": "gelu"}) == "10001"
    with pytest.raises(InvalidNCode, match="no value for slot 'width_2', active here"):
        encode(space, {"lr": 1e-3, "depth": 2, "act": "gelu"})


def test_one_code_per_distinct_configuration():
    space = hpo_space()
    codes = {
        normalize(space, "".join(map(str, c))) for c in itertools.product(*(range(len(s.options)) for s in space.slots))
    }
    configs = {tuple(sorted(decode(space, code).items())) for code in codes}
    assert len(codes) == len(configs) == 4 * (1 + 2 + 2 * 3) * 2
    rng = random.Random(0)
    for _ in range(200):
        code = sample(space, rng)
        assert normalize(space, code) == code
        changed = mutate(space, code, rng)
        assert changed != code and normalize(space, changed) == changed
        assert all(normalize(space, other) == other for other in neighbours(space, code))


def test_float_values_read_back_from_printed_numbers():
    space = hpo_space()
    assert encode(space, {"lr": 0.0010000000001, "depth": 1, "act": "relu"}) == "10000"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: w, options: [1], when: {nowhere: [1]}}", "conditional on 'nowhere', which is no slot"),
        ("{name: w, options: [1], when: {depth: [7]}}", "conditional on 'depth' = 7, which is not one of its options"),
        ("{name: w, options: [1], when: depth}", "when: 'depth'; write a mapping"),
        ("{name: w, low: 1, high: 2, options: [1]}", "gives both options and a low/high range"),
        ("{name: w, low: 1, high: 2, type: complex}", "type 'complex' is not int or float"),
    ],
)
def test_bad_yaml_slots_are_one_clear_line(tmp_path, entry, message):
    path = tmp_path / "space.yaml"
    path.write_text(f"slots:\n  - {{name: depth, low: 1, high: 3}}\n  - {entry}\n")
    with pytest.raises(SpaceFileError, match=message):
        load_space_file(path)


def test_condition_on_a_later_slot_is_refused():
    with pytest.raises(ValueError, match="conditional on 'b', which is a later slot"):
        SearchSpace("s", [Slot("a", [1, 2], when={"b": [1]}), Slot("b", [1, 2])])


def test_collm_task_description_states_each_condition():
    from prompts.collm import task_description
    from tools.evaluator import Metric

    text = task_description(hpo_space(), Metric("val_acc", True))
    assert "width_3 [used only when depth in [3]; otherwise write 0]: 0=16, 1=32, 2=64" in text
    assert "lr: 0=0.0001, 1=0.001, 2=0.01, 3=0.1" in text
