"""The built-in search spaces, their validity rules, and YAML space files."""

from __future__ import annotations

import itertools
import random

import pytest

from tools.ncode import InvalidNCode, SearchSpace, from_indices, is_valid, normalize, sample, to_indices, validate
from tools.spaces import (
    BUILTIN_SPACES,
    NB201_EDGES,
    RULES,
    SpaceFileError,
    hat_space,
    load_space_file,
    nas_bench_graph_space,
    nb201_space,
    space_from_dict,
)


@pytest.mark.parametrize("name", sorted(BUILTIN_SPACES))
def test_every_builtin_space_builds_and_samples(name):
    space = BUILTIN_SPACES[name]()
    assert isinstance(space, SearchSpace)
    assert space.name == name
    assert space.length == len(space.slots) > 0
    assert len({slot.name for slot in space.slots}) == space.length
    assert all(slot.description for slot in space.slots)
    code = sample(space, random.Random(0))
    assert len(code) == space.length
    assert is_valid(space, code)


def test_nb201_has_six_edges_of_five_ops_in_the_papers_order():
    space = nb201_space()
    assert space.length == 6
    assert [slot.name for slot in space.slots] == [
        "edge_1_0",
        "edge_2_0",
        "edge_2_1",
        "edge_3_0",
        "edge_3_1",
        "edge_3_2",
    ]
    for slot in space.slots:
        assert slot.options == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert space.size() == 5**6


def test_sam_lora_has_32_slots_of_four_ranks():
    space = BUILTIN_SPACES["sam_lora"]()
    assert space.length == 32
    assert all(slot.options == (3, 6, 12, 24) for slot in space.slots)


def test_diffusion_lora_has_48_slots_of_three_ranks():
    space = BUILTIN_SPACES["diffusion_lora"]()
    assert space.length == 48
    assert all(slot.options == (4, 8, 16) for slot in space.slots)


def test_hat_space_layout():
    space = hat_space()
    names = [slot.name for slot in space.slots]
    assert space.length == 3 + 6 * 2 + 6 * 3
    assert names[:3] == ["encoder_embed_dim", "decoder_embed_dim", "decoder_layers"]
    assert space.slots[2].options == (1, 2, 3, 4, 5, 6)
    assert {name for name in names if name.startswith("decoder_ffn_")} == {f"decoder_ffn_{i}" for i in range(6)}
    assert {name for name in names if name.startswith("encoder_heads_")} == {f"encoder_heads_{i}" for i in range(6)}


def test_nb_asr_space_layout():
    space = BUILTIN_SPACES["nb_asr"]()
    names = [slot.name for slot in space.slots]
    assert space.length == 3 + (1 + 2 + 3)
    assert [name for name in names if name.startswith("main_")] == ["main_1", "main_2", "main_3"]
    assert [name for name in names if name.startswith("skip_3_")] == ["skip_3_0", "skip_3_1", "skip_3_2"]
    assert all(len(slot.options) == 6 for slot in space.slots if slot.name.startswith("main_"))
    assert all(slot.options == ("zero", "identity") for slot in space.slots if slot.name.startswith("skip_"))


def test_nas_bench_graph_space_layout():
    space = nas_bench_graph_space()
    assert space.length == 5
    assert space.slots[0].name == "links"
    assert len(space.slots[0].options) == 9
    assert all(len(slot.options) == 9 and "skip" in slot.options for slot in space.slots[1:])
    proteins = nas_bench_graph_space("proteins")
    assert proteins.length == 5
    assert all(slot.options == ("gcn", "sage", "arma", "fc", "skip") for slot in proteins.slots[1:])


# NAS-Bench-201 connectivity --------------------------------------------------------------------


def reaches_output(indices: tuple[int, ...]) -> bool:
    """Independent check: depth-first search over the edges that are not 'none'."""
    adjacency: dict[int, list[int]] = {node: [] for node in range(4)}
    for (target, source), op in zip(NB201_EDGES, indices, strict=True):
        if op != 0:
            adjacency[source].append(target)
    stack, seen = [0], {0}
    while stack:
        for nxt in adjacency[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return 3 in seen


@pytest.mark.parametrize(
    "code",
    [
        "000000",  # nothing connected
        "100000",  # node 1 is reached, but nothing leaves it
        "010000",  # node 2 is reached, but 2 -> 3 is 'none'
        "000001",  # 2 -> 3 exists, but node 2 is never reached
        "001001",  # 1 -> 2 -> 3 exists, but its first edge 0 -> 1 is 'none'
        "000040",  # 1 -> 3 exists, but node 1 is never reached
    ],
)
def test_nb201_rule_flags_disconnected_cells(code):
    space = nb201_space()
    with pytest.raises(InvalidNCode, match="no path from the input node to the output node"):
        validate(space, code)


@pytest.mark.parametrize("code", ["333132", "000100", "100010", "010001", "301020", "444444"])
def test_nb201_rule_accepts_connected_cells(code):
    assert validate(nb201_space(), code) == code


def test_nb201_rule_agrees_with_graph_search_on_every_cell():
    space = nb201_space()
    valid = 0
    for indices in itertools.product(range(5), repeat=6):
        expected = reaches_output(indices)
        assert is_valid(space, from_indices(indices)) is expected, indices
        valid += expected
    assert 0 < valid < 5**6


def test_nb201_has_no_normalization():
    space = nb201_space()
    rng = random.Random(0)
    for _ in range(200):
        code = from_indices(rng.randrange(5) for _ in range(6))
        assert normalize(space, code) == code


# HAT -------------------------------------------------------------------------------------------


def test_hat_normalization_zeroes_unused_decoder_layers():
    space = hat_space()
    names = [slot.name for slot in space.slots]
    ones = [1] * space.length
    ones[names.index("decoder_layers")] = 1  # option 1 = 2 decoder layers
    canonical = to_indices(space, normalize(space, from_indices(ones)))
    for name, value in zip(names, canonical, strict=True):
        layer = int(name.rsplit("_", 1)[1]) if name[-1].isdigit() else None
        if name.startswith("decoder_") and layer is not None and layer >= 2:
            assert value == 0, name
        else:
            assert value == 1, name


def test_hat_normalization_keeps_all_layers_at_full_depth_and_is_idempotent():
    space = hat_space()
    names = [slot.name for slot in space.slots]
    full = [1] * space.length
    full[names.index("decoder_layers")] = 5  # 6 decoder layers: every slot is used
    assert normalize(space, from_indices(full)) == from_indices(full)
    rng = random.Random(0)
    for _ in range(300):
        code = from_indices(rng.randrange(len(slot.options)) for slot in space.slots)
        once = normalize(space, code)
        assert normalize(space, once) == once


def test_hat_codes_differing_only_in_unused_layers_share_a_code():
    space = hat_space()
    names = [slot.name for slot in space.slots]
    base = [0] * space.length  # decoder_layers option 0 = 1 layer
    other = list(base)
    other[names.index("decoder_ffn_4")] = 2
    other[names.index("decoder_cross_heads_1")] = 1
    assert normalize(space, from_indices(other)) == normalize(space, from_indices(base))
    used = list(base)
    used[names.index("decoder_ffn_0")] = 2
    assert normalize(space, from_indices(used)) != normalize(space, from_indices(base))


# NAS-Bench-Graph -------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["cora", "proteins"])
def test_nas_bench_graph_normalization_is_idempotent(dataset):
    space = nas_bench_graph_space(dataset)
    rng = random.Random(0)
    canonical = set()
    for _ in range(1500):
        code = from_indices(rng.randrange(len(slot.options)) for slot in space.slots)
        once = normalize(space, code)
        assert normalize(space, once) == once
        canonical.add(once)
    assert len(canonical) > 100


@pytest.mark.parametrize("dataset", ["cora", "proteins"])
def test_nas_bench_graph_all_skip_is_invalid(dataset):
    space = nas_bench_graph_space(dataset)
    skip = space.slots[1].options.index("skip")
    for link in range(len(space.slots[0].options)):
        code = from_indices((link, skip, skip, skip, skip))
        with pytest.raises(InvalidNCode, match="skip"):
            validate(space, code)
    one_real = from_indices((0, 0, skip, skip, skip))
    assert is_valid(space, normalize(space, one_real))


# YAML spaces -----------------------------------------------------------------------------------


def write(tmp_path, text: str, name: str = "space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_space_with_repeat(tmp_path):
    path = write(
        tmp_path,
        """
name: my_space
description: a toy space
slots:
  - {name: depth, options: [2, 4, 8], description: number of blocks}
  - {name: rank, options: [4, 8, 16], repeat: 3}
  - {name: act, options: [relu, gelu]}
""",
    )
    space = load_space_file(path)
    assert space.name == "my_space"
    assert space.description == "a toy space"
    assert [slot.name for slot in space.slots] == ["depth", "rank_0", "rank_1", "rank_2", "act"]
    assert space.slots[0].options == (2, 4, 8)
    assert space.slots[0].description == "number of blocks"
    assert all(slot.options == (4, 8, 16) for slot in space.slots[1:4])
    assert space.slots[4].options == ("relu", "gelu")
    assert space.rule is RULES["none"]
    assert space.size() == 3 * 27 * 2


def test_yaml_space_with_builtin_rule(tmp_path):
    slots = "\n".join(
        f"  - {{name: e{i}, options: [none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3]}}" for i in range(6)
    )
    space = load_space_file(write(tmp_path, f"rule: nb201_connected\nslots:\n{slots}\n"))
    assert space.rule is RULES["nb201_connected"]
    assert space.name == "custom"
    assert not is_valid(space, "000000")
    assert is_valid(space, "333132")


def test_yaml_unknown_rule_lists_valid_rules(tmp_path):
    path = write(tmp_path, "rule: acyclic\nslots:\n  - {name: a, options: [1, 2]}\n")
    with pytest.raises(SpaceFileError) as info:
        load_space_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "'acyclic'" in message
    for rule in RULES:
        assert rule in message


def test_yaml_duplicate_slot_names(tmp_path):
    path = write(tmp_path, "slots:\n  - {name: a, options: [1, 2]}\n  - {name: a, options: [3, 4]}\n")
    with pytest.raises(SpaceFileError, match="unique"):
        load_space_file(path)


def test_yaml_repeat_clashing_with_a_plain_slot(tmp_path):
    path = write(tmp_path, "slots:\n  - {name: r, options: [1, 2], repeat: 2}\n  - {name: r_1, options: [3]}\n")
    with pytest.raises(SpaceFileError, match="unique"):
        load_space_file(path)


@pytest.mark.parametrize(
    "slots",
    [
        "  - {name: a}",
        "  - {options: [1, 2]}",
        "  - {name: a, options: 3}",
        "  - just_a_string",
    ],
)
def test_yaml_slot_without_name_or_options(tmp_path, slots):
    with pytest.raises(SpaceFileError, match=r"slot (0|'a') needs (a 'name' and )?an 'options' list"):
        load_space_file(write(tmp_path, f"slots:\n{slots}\n"))


@pytest.mark.parametrize("options", ["[]", "[1, 2, 1]"])
def test_yaml_empty_or_repeated_options(tmp_path, options):
    with pytest.raises(SpaceFileError, match="'a' needs at least one option and no repeated options"):
        load_space_file(write(tmp_path, f"slots:\n  - {{name: a, options: {options}}}\n"))


def test_yaml_too_many_options(tmp_path):
    options = ", ".join(str(i) for i in range(63))
    with pytest.raises(SpaceFileError, match="63 options"):
        load_space_file(write(tmp_path, f"slots:\n  - {{name: a, options: [{options}]}}\n"))


@pytest.mark.parametrize("text", ["", "name: x\n", "slots: []\n", "- {name: a, options: [1]}\n", "slots: 3\n"])
def test_yaml_without_slots(tmp_path, text):
    with pytest.raises(SpaceFileError, match="non-empty 'slots' list"):
        load_space_file(write(tmp_path, text))


def test_yaml_invalid_syntax(tmp_path):
    path = write(tmp_path, "slots:\n  - {name: a, options: [1, 2\n")
    with pytest.raises(SpaceFileError) as info:
        load_space_file(path)
    assert str(path) in str(info.value)
    assert "not valid YAML" in str(info.value)


def test_missing_space_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpaceFileError) as info:
        load_space_file(path)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)


def test_space_from_dict_names_its_source():
    with pytest.raises(SpaceFileError, match=r"^inline: "):
        space_from_dict({"slots": "x"}, source="inline")


def test_yaml_non_integer_repeat_is_a_space_file_error(tmp_path):
    path = write(tmp_path, "slots:\n  - {name: a, options: [1, 2], repeat: many}\n")
    with pytest.raises(SpaceFileError, match="repeat"):
        load_space_file(path)


def test_an_option_that_is_not_one_value_is_refused():
    from tools.spaces import SpaceFileError, space_from_dict

    for bad in ({"a": 1}, [1, 2]):
        with pytest.raises(SpaceFileError, match="an option is one value"):
            space_from_dict({"name": "s", "slots": [{"name": "x", "options": [None, bad]}]})
    assert space_from_dict({"name": "s", "slots": [{"name": "x", "options": [None, 1, "a", True]}]}).length == 1
