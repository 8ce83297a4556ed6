"""Synthetic training landscapes: many spaces, not one, so the ranker learns to rank in context.

A landscape draws a space (3-16 slots by default, 2-12 options per slot, so codes use digits
and sometimes letters) and a score function made of additive per-option effects,
pairwise interactions between a few slot pairs, and Gaussian noise. The relative
weight of each part is drawn per landscape, from nearly additive to strongly
interacting, so no single shortcut ranks every landscape well.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tools.evaluator import Metric
from tools.ncode import SearchSpace, Slot, to_indices


@dataclass(frozen=True)
class Landscape:
    space: SearchSpace
    additive: tuple[tuple[float, ...], ...]
    interactions: tuple[tuple[int, int, tuple[tuple[float, ...], ...]], ...]
    noise: float
    seed: int

    def score(self, code: str) -> float:
        choice = to_indices(self.space, code)
        value = sum(effects[option] for effects, option in zip(self.additive, choice, strict=True))
        for left, right, table in self.interactions:
            value += table[choice[left]][choice[right]]
        # Noise fixed per code: the same architecture always scores the same, as in a table.
        value += random.Random(f"{self.seed}/{code}").gauss(0.0, self.noise)
        return round(value, 6)


METRIC = Metric("score", True, "synthetic benchmark score")


def random_landscape(rng: random.Random, slot_range: tuple[int, int] = (3, 16)) -> Landscape:
    """A landscape of ``slot_range[0]``-``slot_range[1]`` slots (few slots: a warm-up curriculum's easy spaces)."""
    seed = rng.randrange(2**31)
    n_slots = rng.randint(*slot_range)
    slots = tuple(Slot(f"s{i}", tuple(range(rng.choice((2, 3, 3, 4, 4, 5, 5, 6, 8, 12))))) for i in range(n_slots))
    space = SearchSpace(f"synthetic-{seed}", slots, description="synthetic landscape")
    additive_scale, interaction_scale = rng.uniform(0.2, 1.0), rng.uniform(0.0, 1.0)
    additive = tuple(tuple(rng.gauss(0.0, additive_scale) for _ in slot.options) for slot in slots)
    interactions = []
    for _ in range(rng.randint(0, n_slots) if n_slots > 1 else 0):
        left, right = rng.sample(range(n_slots), 2)
        table = tuple(
            tuple(rng.gauss(0.0, interaction_scale) for _ in slots[right].options) for _ in slots[left].options
        )
        interactions.append((left, right, table))
    noise = rng.uniform(0.0, 0.3) * (additive_scale + interaction_scale)
    return Landscape(space, additive, tuple(interactions), noise, seed)
