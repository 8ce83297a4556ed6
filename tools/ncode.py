"""NCodes: one symbol per decision slot of a search space, the project's one currency.

A slot's chosen option is written as its index: ``0``-``9``, then ``a``-``z``, then
``A``-``Z`` for slots with more than ten options (62 options at most). Every code
round-trips through :func:`decode` and :func:`encode`.

Spaces are plain data (:class:`SearchSpace`); the operations on them are pure
functions taking an explicit ``random.Random`` so that searches are reproducible
and resumable.
"""

from __future__ import annotations

import functools
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SYMBOL_INDEX = {symbol: index for index, symbol in enumerate(SYMBOLS)}


class InvalidNCode(ValueError):
    """A code that does not belong to a space; the message names the slot and the fix."""


@dataclass(frozen=True)
class Slot:
    """One decision: a name, its ordered options, and what it means (shown to LLMs)."""

    name: str
    options: tuple[Any, ...]
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))  # a list is accepted and frozen


@dataclass(frozen=True)
class Rule:
    """A space's validity rule: ``check`` says why a choice is invalid (or None);
    ``normalize`` maps equivalent choices to one canonical choice."""

    name: str
    description: str
    check: Callable[[SearchSpace, tuple[int, ...]], str | None] = lambda space, choice: None
    normalize: Callable[[SearchSpace, tuple[int, ...]], tuple[int, ...]] = lambda space, choice: choice


NO_RULE = Rule("none", "every combination of options is valid")


@dataclass(frozen=True)
class SearchSpace:
    """Ordered named slots plus an optional validity rule.

    ``allowed`` narrows each slot to a subset of its option indices (a pruned
    subspace); codes keep the full space's indices. ``members``, when set, is
    the finite set of codes that exist (a sparse results table).
    """

    name: str
    slots: tuple[Slot, ...]
    rule: Rule = NO_RULE
    description: str = ""
    allowed: tuple[tuple[int, ...], ...] | None = None
    members: frozenset[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "slots", tuple(self.slots))  # a list is accepted and frozen
        if not self.slots:
            raise ValueError(f"space {self.name!r} has no slots")
        for slot in self.slots:
            if not 1 <= len(slot.options) <= len(SYMBOLS):
                raise ValueError(
                    f"space {self.name!r}: slot {slot.name!r} has {len(slot.options)} options; "
                    f"a slot needs 1 to {len(SYMBOLS)}"
                )

    @property
    def length(self) -> int:
        return len(self.slots)

    def choices(self, slot_index: int) -> tuple[int, ...]:
        """Option indices a sampler may pick for a slot (all unless pruned)."""
        if self.allowed is None:
            return tuple(range(len(self.slots[slot_index].options)))
        return self.allowed[slot_index]

    def size(self) -> int:
        """Number of codes before the validity rule (product of allowed options)."""
        if self.members is not None:
            return len(self.members)
        total = 1
        for index in range(self.length):
            total *= len(self.choices(index))
        return total


def to_indices(space: SearchSpace, code: str) -> tuple[int, ...]:
    """Parse a code into option indices, raising :class:`InvalidNCode` with the slot at fault."""
    if not isinstance(code, str):
        raise InvalidNCode(f"an NCode is a string, got {type(code).__name__}")
    if len(code) != space.length:
        raise InvalidNCode(
            f"NCode {code!r} has {len(code)} symbols but space {space.name!r} has "
            f"{space.length} slots; give one symbol per slot"
        )
    indices = []
    for position, (symbol, slot) in enumerate(zip(code, space.slots, strict=True)):
        index = _SYMBOL_INDEX.get(symbol)
        if index is None or index >= len(slot.options):
            raise InvalidNCode(
                f"NCode {code!r}: symbol {symbol!r} at position {position} (slot {slot.name!r}) "
                f"is not an option; use {SYMBOLS[0]}-{SYMBOLS[len(slot.options) - 1]}"
            )
        indices.append(index)
    return tuple(indices)


def from_indices(indices: Iterable[int]) -> str:
    return "".join(SYMBOLS[index] for index in indices)


def validate(space: SearchSpace, code: str) -> str:
    """Return the code if it is a valid member of the space, else raise :class:`InvalidNCode`."""
    indices = to_indices(space, code)
    reason = space.rule.check(space, indices)
    if reason is not None:
        raise InvalidNCode(f"NCode {code!r} is invalid in space {space.name!r}: {reason}")
    if space.members is not None and code not in space.members:
        raise InvalidNCode(f"NCode {code!r} is not one of the {len(space.members)} codes of {space.name!r}")
    return code


def is_valid(space: SearchSpace, code: str) -> bool:
    try:
        validate(space, code)
    except InvalidNCode:
        return False
    return True


def decode(space: SearchSpace, code: str) -> dict[str, Any]:
    """The configuration a code stands for: slot name -> chosen option."""
    indices = to_indices(space, code)
    return {slot.name: slot.options[index] for slot, index in zip(space.slots, indices, strict=True)}


def encode(space: SearchSpace, config: Mapping[str, Any] | Sequence[Any]) -> str:
    """The code of a configuration given as slot name -> option, or as options in slot order."""
    values = [config[slot.name] for slot in space.slots] if isinstance(config, Mapping) else list(config)
    if len(values) != space.length:
        raise InvalidNCode(f"space {space.name!r} has {space.length} slots, got {len(values)} values")
    indices = []
    for slot, value in zip(space.slots, values, strict=True):
        matches = [index for index, option in enumerate(slot.options) if option == value]
        if not matches:
            raise InvalidNCode(f"slot {slot.name!r} has no option {value!r}; options are {list(slot.options)}")
        indices.append(matches[0])
    return from_indices(indices)


def normalize(space: SearchSpace, code: str) -> str:
    """The canonical code of the architecture a code stands for (see :class:`Rule`)."""
    return from_indices(space.rule.normalize(space, to_indices(space, code)))


def sample(space: SearchSpace, rng: random.Random, max_tries: int = 1000) -> str:
    """A uniformly drawn valid, canonical code (rejection sampling over the rule)."""
    if space.members is not None:
        return rng.choice(sorted(space.members))
    for _ in range(max_tries):
        indices = tuple(rng.choice(space.choices(i)) for i in range(space.length))
        code = from_indices(space.rule.normalize(space, indices))
        if is_valid(space, code):
            return code
    raise InvalidNCode(f"no valid code found in {max_tries} draws from space {space.name!r}")


def mutate(space: SearchSpace, code: str, rng: random.Random, max_tries: int = 100) -> str:
    """Change one slot to another allowed option: Real et al.'s mutation.

    Returns a valid canonical code that differs from ``code``, or ``code`` itself
    when no single-slot change leads to a different valid code.
    """
    indices = list(to_indices(space, code))
    if space.members is not None:
        members = neighbours(space, code)
        return rng.choice(members) if members else code
    mutable = [i for i in range(space.length) if len(space.choices(i)) > 1]
    for _ in range(max_tries if mutable else 0):
        slot_index = rng.choice(mutable)
        options = [option for option in space.choices(slot_index) if option != indices[slot_index]]
        changed = indices.copy()
        changed[slot_index] = rng.choice(options)
        candidate = from_indices(space.rule.normalize(space, tuple(changed)))
        if candidate != code and is_valid(space, candidate):
            return candidate
    return code


def neighbours(space: SearchSpace, code: str) -> list[str]:
    """Every valid canonical code one slot change away from ``code``, sorted: local search's neighbourhood.

    On a results table these are the members at Hamming distance 1 (read from an index built once per table).
    """
    if space.members is not None:
        index = _one_slot_index(space.members)
        found = {other for i in range(len(code)) for other in index.get(_wildcard(code, i), ())}
        found.discard(code)
        return sorted(found)
    indices = to_indices(space, code)
    found = set()
    for slot_index in range(space.length):
        for option in space.choices(slot_index):
            if option == indices[slot_index]:
                continue
            changed = (*indices[:slot_index], option, *indices[slot_index + 1 :])
            candidate = from_indices(space.rule.normalize(space, changed))
            if candidate != code and is_valid(space, candidate):
                found.add(candidate)
    return sorted(found)


def _wildcard(code: str, position: int) -> str:
    return f"{code[:position]}\0{code[position + 1 :]}"


@functools.lru_cache(maxsize=8)
def _one_slot_index(members: frozenset[str]) -> dict[str, tuple[str, ...]]:
    """Members grouped by each code with one position blanked: neighbours are then a few dictionary reads."""
    groups: dict[str, list[str]] = defaultdict(list)
    for member in members:
        for position in range(len(member)):
            groups[_wildcard(member, position)].append(member)
    return {key: tuple(group) for key, group in groups.items()}


def prune(space: SearchSpace, rng: random.Random) -> SearchSpace:
    """The paper's subspace sampling: each slot is frozen to one option with p=0.5;
    each option of a free slot is dropped with p=0.5, keeping at least one."""
    allowed = []
    for index in range(space.length):
        choices = space.choices(index)
        if rng.random() < 0.5:
            allowed.append((rng.choice(choices),))
            continue
        kept = tuple(option for option in choices if rng.random() >= 0.5)
        allowed.append(kept or (rng.choice(choices),))
    return replace(space, allowed=tuple(allowed))
