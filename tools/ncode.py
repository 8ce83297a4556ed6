"""NCodes: one symbol per decision slot of a search space, the project's one currency.

A slot's chosen option is written as its index: ``0``-``9``, then ``a``-``z``, then
``A``-``Z`` for slots with more than ten options (62 options at most). Every code
round-trips through :func:`decode` and :func:`encode`.

Spaces are plain data (:class:`SearchSpace`); the operations on them are pure
functions taking an explicit ``random.Random`` so that searches are reproducible
and resumable.

Numeric ranges stay codes: :meth:`Slot.int` and :meth:`Slot.float` lay a range out as an ordered grid
of at most 62 levels (one symbol each), so every ranker, the LLM included, reads them as it reads a list
of options, and neighbouring symbols are neighbouring values. A slot may be *conditional* (``when``:
active only while earlier slots take given values); an inactive slot is written as option 0 and decoded
as absent, so each distinct configuration has one code.
"""

from __future__ import annotations

import functools
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SYMBOL_INDEX = {symbol: index for index, symbol in enumerate(SYMBOLS)}


class InvalidNCode(ValueError):
    """A code that does not belong to a space; the message names the slot and the fix."""


MAX_LEVELS = 62  # one symbol per option: 10 digits and 52 letters


@dataclass(frozen=True)
class Range:
    """How a numeric slot's grid was made, kept so that a stored space rebuilds it exactly."""

    kind: str  # "int" | "float"
    low: float
    high: float
    log: bool = False
    levels: int | None = None  # None: every integer of an int range

    def grid(self, slot: str) -> tuple[int | float, ...]:
        """The ordered options; raises ValueError naming the slot and the fix."""
        if not self.low < self.high:
            raise ValueError(f"slot {slot!r}: low {self.low!r} must be below high {self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"slot {slot!r}: a log range needs low > 0, got {self.low!r}")
        if self.levels is not None and not 2 <= self.levels <= MAX_LEVELS:
            raise ValueError(
                f"slot {slot!r}: levels {self.levels!r} must be 2 to {MAX_LEVELS} (an NCode symbol per level)"
            )
        if self.kind == "int":
            low, high = int(self.low), int(self.high)
            if (low, high) != (self.low, self.high):
                raise ValueError(f"slot {slot!r}: an int range needs whole bounds, got {self.low!r}..{self.high!r}")
            if self.levels is None and self.log:
                raise ValueError(f"slot {slot!r}: a log int range needs levels: N (how many values to spread)")
            if self.levels is None:
                if high - low + 1 > MAX_LEVELS:
                    raise ValueError(
                        f"slot {slot!r}: {low}..{high} holds {high - low + 1} integers but a slot holds at most "
                        f"{MAX_LEVELS} options (one NCode symbol each); give levels: N (at most {MAX_LEVELS})"
                    )
                return tuple(range(low, high + 1))
            return tuple(dict.fromkeys(round(value) for value in self._points(self.levels)))
        levels = 8 if self.levels is None else self.levels
        return tuple(float(f"{value:.6g}") for value in self._points(levels))

    def _points(self, levels: int) -> list[float]:
        if self.log:
            ratio = (self.high / self.low) ** (1 / (levels - 1))
            return [self.low * ratio**i for i in range(levels - 1)] + [self.high]
        step = (self.high - self.low) / (levels - 1)
        return [self.low + step * i for i in range(levels - 1)] + [self.high]


@dataclass(frozen=True)
class Slot:
    """One decision: a name, its ordered options, and what it means (shown to LLMs). ``when`` makes it
    conditional: active only while each named earlier slot takes one of the listed values."""

    name: str
    options: tuple[Any, ...]
    description: str = ""
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    numeric: Range | None = None  # set by Slot.int / Slot.float: the range its options were laid out from

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))  # a list is accepted and frozen
        when = self.when.items() if isinstance(self.when, Mapping) else self.when
        frozen = []
        for parent, values in when:
            values = tuple(values) if isinstance(values, list | tuple | set | frozenset) else (values,)
            if not values:
                raise ValueError(f"slot {self.name!r}: the condition on {parent!r} lists no values")
            frozen.append((str(parent), values))
        object.__setattr__(self, "when", tuple(frozen))

    @classmethod
    def int(
        cls,
        name: str,
        low: int,
        high: int,
        *,
        log: bool = False,
        levels: int | None = None,
        description: str = "",
        when: Mapping[str, Any] | None = None,
    ) -> Slot:
        """Integers from ``low`` to ``high``: all of them (at most 62), or ``levels`` spread linearly or in log."""
        spec = Range("int", low, high, log, levels)
        return cls(name, spec.grid(name), description, tuple((when or {}).items()), spec)

    @classmethod
    def float(
        cls,
        name: str,
        low: float,
        high: float,
        *,
        log: bool = False,
        levels: int = 8,
        description: str = "",
        when: Mapping[str, Any] | None = None,
    ) -> Slot:
        """``levels`` values from ``low`` to ``high`` (both included), evenly spaced or, with ``log``, in ratio."""
        spec = Range("float", float(low), float(high), log, levels)
        return cls(name, spec.grid(name), description, tuple((when or {}).items()), spec)


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
        earlier: dict[str, Slot] = {}
        for slot in self.slots:
            if not 1 <= len(slot.options) <= len(SYMBOLS):
                raise ValueError(
                    f"space {self.name!r}: slot {slot.name!r} has {len(slot.options)} options; "
                    f"a slot needs 1 to {len(SYMBOLS)} (use levels: N for a numeric range)"
                )
            for parent, values in slot.when:
                if parent not in earlier:
                    known = "a later slot" if parent in {s.name for s in self.slots} else "no slot"
                    raise ValueError(
                        f"space {self.name!r}: slot {slot.name!r} is conditional on {parent!r}, which is {known}; "
                        "a condition names a slot declared before it"
                    )
                missing = [value for value in values if value not in earlier[parent].options]
                if missing:
                    raise ValueError(
                        f"space {self.name!r}: slot {slot.name!r} is conditional on {parent!r} = {missing[0]!r}, "
                        f"which is not one of its options {list(earlier[parent].options)}"
                    )
            earlier[slot.name] = slot

    @property
    def length(self) -> int:
        return len(self.slots)

    @functools.cached_property
    def conditions(self) -> tuple[tuple[tuple[int, frozenset[int]], ...], ...] | None:
        """Per slot, its conditions as (parent position, option indices that activate it); None: no slot is
        conditional (the common case, which then costs nothing)."""
        if not any(slot.when for slot in self.slots):
            return None
        position = {slot.name: i for i, slot in enumerate(self.slots)}

        def allowed(parent: str, values: tuple[Any, ...]) -> frozenset[int]:
            return frozenset(i for i, option in enumerate(self.slots[position[parent]].options) if option in values)

        return tuple(tuple((position[p], allowed(p, values)) for p, values in slot.when) for slot in self.slots)

    def active(self, choice: Sequence[int]) -> tuple[bool, ...]:
        """Which slots a choice uses: a conditional slot is active when its parents are active and match."""
        if self.conditions is None:
            return (True,) * self.length
        active: list[bool] = []
        for conditions in self.conditions:
            active.append(all(active[parent] and choice[parent] in allowed for parent, allowed in conditions))
        return tuple(active)

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
    """The configuration a code stands for: slot name -> chosen option (inactive conditional slots absent)."""
    indices = to_indices(space, code)
    active = space.active(indices)
    return {slot.name: slot.options[index] for slot, index, on in zip(space.slots, indices, active, strict=True) if on}


def encode(space: SearchSpace, config: Mapping[str, Any] | Sequence[Any]) -> str:
    """The canonical code of a configuration given as slot name -> option, or as options in slot order.
    A conditional slot's value may be left out where the slot is inactive."""
    by_name = isinstance(config, Mapping)
    values = [config.get(slot.name, _ABSENT) for slot in space.slots] if by_name else list(config)
    if len(values) != space.length:
        raise InvalidNCode(f"space {space.name!r} has {space.length} slots, got {len(values)} values")
    indices = []
    for slot, value in zip(space.slots, values, strict=True):
        matches = [index for index, option in enumerate(slot.options) if _same(option, value)]
        if value is _ABSENT and slot.when:
            matches = [0]  # checked below: only an inactive slot may be left out
        elif value is _ABSENT:
            raise InvalidNCode(f"the configuration has no value for slot {slot.name!r} (options {list(slot.options)})")
        if not matches:
            raise InvalidNCode(f"slot {slot.name!r} has no option {value!r}; options are {list(slot.options)}"
                               + _nearest_level(slot, value))  # fmt: skip
        indices.append(matches[0])
    for slot, value, on in zip(space.slots, values, space.active(indices), strict=True):
        if on and value is _ABSENT:
            raise InvalidNCode(f"the configuration has no value for slot {slot.name!r}, active here")
    return from_indices(canonical(space, tuple(indices)))


_ABSENT = object()


def _nearest_level(slot: Slot, value: Any) -> str:
    """For a numeric slot, the hint a user needs: the grid level closest to the value asked for."""
    if slot.numeric is None or not isinstance(value, int | float) or isinstance(value, bool):
        return ""
    distance = (lambda o: abs(math.log(o / value))) if slot.numeric.log and value > 0 else (lambda o: abs(o - value))
    return f" (a grid of {len(slot.options)} levels; the nearest is {min(slot.options, key=distance)!r})"


def _same(option: Any, value: Any) -> bool:
    """Equal values, with a float range's levels matched to 6 significant digits (as CSV files print them)."""
    if isinstance(option, float) and isinstance(value, int | float) and not isinstance(value, bool):
        return option == value or float(f"{value:.6g}") == option
    return option == value


def canonical(space: SearchSpace, choice: tuple[int, ...]) -> tuple[int, ...]:
    """The rule's canonical choice with every inactive conditional slot set to option 0."""
    choice = space.rule.normalize(space, choice)
    if space.conditions is None:
        return choice
    return tuple(index if on else 0 for index, on in zip(choice, space.active(choice), strict=True))


def normalize(space: SearchSpace, code: str) -> str:
    """The canonical code of the architecture a code stands for (see :class:`Rule` and ``Slot.when``)."""
    return from_indices(canonical(space, to_indices(space, code)))


def sample(space: SearchSpace, rng: random.Random, max_tries: int = 1000) -> str:
    """A uniformly drawn valid, canonical code (rejection sampling over the rule)."""
    if space.members is not None:
        return rng.choice(sorted(space.members))
    for _ in range(max_tries):
        indices = tuple(rng.choice(space.choices(i)) for i in range(space.length))
        code = from_indices(canonical(space, indices))
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
        candidate = from_indices(canonical(space, tuple(changed)))
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
            candidate = from_indices(canonical(space, changed))
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
