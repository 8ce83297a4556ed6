"""The search spaces of every task in the mission, their validity rules, and YAML spaces.

A user space is a YAML file::

    name: my_space
    description: what is being searched
    rule: none            # or a built-in rule name (see RULES)
    slots:
      - {name: depth, options: [2, 4, 8], description: number of blocks}
      - {name: rank, options: [4, 8, 16], repeat: 3}   # rank_0, rank_1, rank_2
      - {name: lr, low: 1.0e-4, high: 0.1, log: true, levels: 8}      # a float range laid out as 8 options
      - {name: layers, low: 1, high: 4}                                # every integer (62 at most)
      - {name: width_4, low: 16, high: 512, log: true, levels: 6, when: {layers: [4]}}  # used only at depth 4

A range's type is ``int`` when both bounds are whole numbers, else ``float`` (``type: float`` overrides);
a float range has 8 levels unless ``levels`` says otherwise. ``when`` names slots declared earlier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tools.ncode import NO_RULE, Range, Rule, SearchSpace, Slot

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from), the table's order


def _nb201_disconnected(space: SearchSpace, choice: tuple[int, ...]) -> str | None:
    reachable = {0}
    for (target, source), op in zip(NB201_EDGES, choice, strict=True):
        if op != 0 and source in reachable:
            reachable.add(target)
    return None if 3 in reachable else "no path from the input node to the output node (every path has a 'none' edge)"


NB201_RULE = Rule("nb201_connected", "the cell must connect its input to its output", check=_nb201_disconnected)


def nb201_space() -> SearchSpace:
    slots = tuple(
        Slot(f"edge_{target}_{source}", NB201_OPS, f"operation on the edge from node {source} to node {target}")
        for target, source in NB201_EDGES
    )
    return SearchSpace(
        "nb201",
        slots,
        NB201_RULE,
        "NAS-Bench-201 cell: 4 nodes, 6 edges, each edge one of 5 operations (node 0 is the input, node 3 the output)",
    )


HAT_LAYERS = 6


def _hat_canonical(space: SearchSpace, choice: tuple[int, ...]) -> tuple[int, ...]:
    """Decoder-layer slots beyond the chosen depth are unused: set them to option 0."""
    names = [slot.name for slot in space.slots]
    depth = space.slots[names.index("decoder_layers")].options[choice[names.index("decoder_layers")]]
    fixed = list(choice)
    for position, name in enumerate(names):
        if name.startswith("decoder_") and name[-1].isdigit() and int(name.rsplit("_", 1)[1]) >= depth:
            fixed[position] = 0
    return tuple(fixed)


HAT_RULE = Rule(
    "hat_active_layers", "slots of decoder layers beyond decoder_layers are unused", normalize=_hat_canonical
)


def hat_space() -> SearchSpace:
    """HAT's SubTransformer space (Wang et al. 2020): 6 encoder layers, 1-6 decoder layers,
    elastic embedding width, and per-layer FFN width and head counts."""
    slots = [
        Slot("encoder_embed_dim", (512, 640), "encoder embedding width"),
        Slot("decoder_embed_dim", (512, 640), "decoder embedding width"),
        Slot("decoder_layers", tuple(range(1, HAT_LAYERS + 1)), "number of decoder layers"),
    ]
    for layer in range(HAT_LAYERS):
        slots.append(Slot(f"encoder_ffn_{layer}", (1024, 2048, 3072), f"FFN hidden width of encoder layer {layer}"))
        slots.append(Slot(f"encoder_heads_{layer}", (4, 8), f"attention heads of encoder layer {layer}"))
    for layer in range(HAT_LAYERS):
        slots.append(Slot(f"decoder_ffn_{layer}", (1024, 2048, 3072), f"FFN hidden width of decoder layer {layer}"))
        slots.append(Slot(f"decoder_self_heads_{layer}", (4, 8), f"self-attention heads of decoder layer {layer}"))
        slots.append(Slot(f"decoder_cross_heads_{layer}", (4, 8), f"cross-attention heads of decoder layer {layer}"))
    return SearchSpace("hat", tuple(slots), HAT_RULE, "HAT sub-transformer for machine translation")


NBG_LINKS = ("0000", "0001", "0011", "0012", "0013", "0111", "0112", "0122", "0123")
NBG_OPS = ("gat", "gcn", "gin", "cheb", "sage", "arma", "graph", "fc", "skip")
NBG_OPS_PROTEINS = ("gcn", "sage", "arma", "fc", "skip")


def _nbg_canonical(space: SearchSpace, choice: tuple[int, ...]) -> tuple[int, ...]:
    """NAS-Bench-Graph stores one representative per isomorphism class; map to it."""
    from nas_bench_graph import Arch

    ops = space.slots[1].options
    link = [int(c) for c in NBG_LINKS[choice[0]]]
    arch = Arch(link, [ops[i] for i in choice[1:]]).regularize()
    arch.move_skip_op()
    arch.equalpart_sort()
    return (NBG_LINKS.index("".join(map(str, arch.link))), *(ops.index(op) for op in arch.ops))


def _nbg_all_skip(space: SearchSpace, choice: tuple[int, ...]) -> str | None:
    skip = space.slots[1].options.index("skip")
    return (
        "all four operations are 'skip': the network computes nothing" if all(c == skip for c in choice[1:]) else None
    )


NBG_RULE = Rule("nas_bench_graph", "not all skip; isomorphic graphs share one code", _nbg_all_skip, _nbg_canonical)


def nas_bench_graph_space(dataset: str = "cora") -> SearchSpace:
    ops = NBG_OPS_PROTEINS if dataset == "proteins" else NBG_OPS
    slots = (
        Slot(
            "links", NBG_LINKS, "input of each of the 4 GNN layers: digit i = index of the layer it reads (0 = input)"
        ),
        *(Slot(f"op_{layer}", ops, f"operation of GNN layer {layer + 1}") for layer in range(4)),
    )
    return SearchSpace("nas_bench_graph", slots, NBG_RULE, "NAS-Bench-Graph: a 4-layer GNN macro architecture")


NB_ASR_MAIN_OPS = ("linear", "conv5", "conv5d2", "conv7", "conv7d2", "zero")
NB_ASR_SKIP_OPS = ("zero", "identity")  # the benchmark's skip bit: 0 = no connection, 1 = identity


def nb_asr_space() -> SearchSpace:
    """NAS-Bench-ASR (Mehrotra et al. 2021): a cell of 4 nodes; node i>0 applies a main op
    to node i-1 and receives a skip connection (identity or zero) from every earlier node.
    Slot order and option indices follow the benchmark's arch vector
    ``[[op, s], [op, s, s], [op, s, s, s]]``, so an NCode is that vector flattened."""
    slots = []
    for node in range(1, 4):
        slots.append(
            Slot(f"main_{node}", NB_ASR_MAIN_OPS, f"main operation computing node {node} from node {node - 1}")
        )
        for source in range(node):
            slots.append(
                Slot(f"skip_{node}_{source}", NB_ASR_SKIP_OPS, f"skip connection from node {source} to {node}")
            )
    return SearchSpace("nb_asr", tuple(slots), NO_RULE, "NAS-Bench-ASR speech recognition cell")


def lora_rank_space(name: str, groups: int, ranks: tuple[int, ...], what: str) -> SearchSpace:
    slots = tuple(Slot(f"rank_{g:02d}", ranks, f"LoRA rank of {what} group {g}") for g in range(groups))
    return SearchSpace(name, slots, NO_RULE, f"LoRA rank per {what} group")


def sam_lora_space() -> SearchSpace:
    return lora_rank_space("sam_lora", 32, (3, 6, 12, 24), "SAM image-encoder module")


def diffusion_lora_space() -> SearchSpace:
    return lora_rank_space("diffusion_lora", 48, (4, 8, 16), "Stable Diffusion UNet")


RULES: dict[str, Rule] = {rule.name: rule for rule in (NO_RULE, NB201_RULE, HAT_RULE, NBG_RULE)}


class SpaceFileError(ValueError):
    """A YAML space that cannot be read; the message names the problem and the fix."""


def load_space_file(path: str | Path) -> SearchSpace:
    path = Path(path)
    if path.is_dir():
        raise SpaceFileError(f"space file {path} is a folder; pass the YAML file itself (e.g. {path / 'space.yaml'})")
    if not path.is_file():
        raise SpaceFileError(f"space file {path} does not exist; pass a YAML file (see tools/spaces.py for the format)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SpaceFileError(f"space file {path} is not valid YAML: {error}") from None
    return space_from_dict(data, source=str(path))


def space_from_dict(data: Any, source: str = "space") -> SearchSpace:
    if not isinstance(data, dict) or not isinstance(data.get("slots"), list) or not data["slots"]:
        raise SpaceFileError(f"{source}: expected a mapping with a non-empty 'slots' list")
    rule_name = data.get("rule") or "none"
    if rule_name not in RULES:
        raise SpaceFileError(f"{source}: unknown rule {rule_name!r}; valid rules: {', '.join(RULES)}")
    slots: list[Slot] = []
    for position, entry in enumerate(data["slots"]):
        if not isinstance(entry, dict) or "name" not in entry:
            raise SpaceFileError(f"{source}: slot {position} needs a 'name' and an 'options' list or a low/high range")
        name = str(entry["name"])
        repeat = entry.get("repeat", 1)
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            raise SpaceFileError(f"{source}: slot {name!r} has repeat {repeat!r}; use a whole number of at least 1")
        when = entry.get("when") or {}
        if not isinstance(when, dict):
            raise SpaceFileError(
                f"{source}: slot {name!r} has when: {when!r}; write a mapping, e.g. when: {{depth: [3, 4]}}"
            )
        options, numeric = _slot_options(entry, name, source)
        names = [name] if repeat == 1 else [f"{name}_{i}" for i in range(repeat)]
        description = str(entry.get("description", ""))
        slots.extend(Slot(n, options, description, tuple(when.items()), numeric) for n in names)
    if len({slot.name for slot in slots}) != len(slots):
        raise SpaceFileError(f"{source}: slot names must be unique")
    try:
        return SearchSpace(
            str(data.get("name", "custom")), tuple(slots), RULES[rule_name], str(data.get("description", ""))
        )
    except ValueError as error:
        raise SpaceFileError(f"{source}: {error}") from None


def _slot_options(entry: dict[str, Any], name: str, source: str) -> tuple[tuple[Any, ...], Range | None]:
    """A slot entry's options: its ``options`` list, or the grid of its ``low``/``high`` range."""
    if "low" in entry or "high" in entry:
        if "options" in entry:
            raise SpaceFileError(f"{source}: slot {name!r} gives both options and a low/high range; keep one")
        try:
            low, high = _number(entry.get("low"), name), _number(entry.get("high"), name)
            kind = entry.get("type") or ("int" if float(low).is_integer() and float(high).is_integer() else "float")
            if kind not in ("int", "float"):
                raise ValueError(f"slot {name!r}: type {kind!r} is not int or float")
            levels = entry.get("levels")
            if levels is not None and (not isinstance(levels, int) or isinstance(levels, bool)):
                raise ValueError(f"slot {name!r}: levels {levels!r} is not a whole number")
            log = entry.get("log", False)
            if not isinstance(log, bool):
                raise ValueError(f"slot {name!r}: log {log!r} is not true or false")
            if kind == "float" and levels is None:
                levels = 8
            numeric = Range(kind, low, high, log, levels)
            return numeric.grid(name), numeric
        except ValueError as error:
            raise SpaceFileError(f"{source}: {error}") from None
    if not isinstance(entry.get("options"), list):
        raise SpaceFileError(f"{source}: slot {name!r} needs an 'options' list or a low/high range")
    options = tuple(entry["options"])
    if not options or len(set(map(repr, options))) != len(options):
        raise SpaceFileError(f"{source}: slot {name!r} needs at least one option and no repeated options")
    nested = [option for option in options if isinstance(option, dict | list)]
    if nested:
        raise SpaceFileError(
            f"{source}: slot {name!r} has option {nested[0]!r}; an option is one value (a number, a string, "
            "true/false or null): split a structured choice into slots"
        )
    return options, None


def _number(value: Any, slot: str) -> float:
    """A bound as a number: YAML reads ``1e-4`` (no dot) as a string, so numeric strings are accepted."""
    try:
        if isinstance(value, bool) or value is None:
            raise ValueError
        number = float(value)
    except ValueError:
        raise ValueError(f"slot {slot!r}: a range needs numeric low and high, got {value!r}") from None
    return int(number) if number.is_integer() and not isinstance(value, float) else number


def space_to_dict(space: SearchSpace) -> dict[str, Any]:
    """The YAML/JSON form of ``space`` (``space_from_dict`` reads it back): how a run stores a space given as
    an object, so that a resumed run and worker processes rebuild it."""
    if RULES.get(space.rule.name) is not space.rule:
        raise SpaceFileError(
            f"space {space.name!r} has a custom rule {space.rule.name!r}, which cannot be stored with a run; use one "
            f"of the named rules ({', '.join(RULES)}) or a plugin task (--task module:Class)"
        )
    for slot in space.slots:
        for value in slot.options:
            if not isinstance(value, str | int | float | bool | None):
                raise SpaceFileError(
                    f"slot {slot.name!r} has option {value!r}; stored spaces hold numbers, strings, booleans or null"
                )
    return {
        "name": space.name,
        "description": space.description,
        "rule": space.rule.name,
        "slots": [_slot_to_dict(slot) for slot in space.slots],
    }


def _slot_to_dict(slot: Slot) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": slot.name, "description": slot.description}
    if slot.numeric is None:
        entry["options"] = list(slot.options)
    else:
        numeric = slot.numeric
        entry |= {"type": numeric.kind, "low": numeric.low, "high": numeric.high, "log": numeric.log}
        entry |= {} if numeric.levels is None else {"levels": numeric.levels}
    if slot.when:
        entry["when"] = {parent: list(values) for parent, values in slot.when}
    return entry


BUILTIN_SPACES = {
    "nb201": nb201_space,
    "nas_bench_graph": nas_bench_graph_space,
    "sam_lora": sam_lora_space,
    "diffusion_lora": diffusion_lora_space,
    "hat": hat_space,
    "nb_asr": nb_asr_space,
}
