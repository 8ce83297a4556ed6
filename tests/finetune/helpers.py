"""Helpers for the finetune tests: small domains and a parser for compact prompts."""

from __future__ import annotations

import random
import re


def synthetic_domains(count: int, seed: int = 0):
    from finetune.curate import Domain
    from finetune.landscapes import METRIC, random_landscape

    rng = random.Random(seed)
    landscapes = [random_landscape(rng) for _ in range(count)]
    return [Domain(land.space.name, land.space, METRIC, land.score) for land in landscapes]


def grid_table_domain(name: str = "grid", slots: int = 5, options: int = 4, seed: int = 0):
    """A complete results table (options**slots rows) with random scores, as a tuple-keyed table."""
    from finetune.domains import tuple_domain

    rng = random.Random(seed)
    rows = {}
    for index in range(options**slots):
        digits = [(index // options**i) % options for i in range(slots)]
        rows["".join(map(str, digits))] = round(rng.uniform(50, 95), 4)
    return tuple_domain(name, rows, "a test table")


def parse_compact(content: str) -> tuple[list[tuple[str, float]], list[str]]:
    """(history code, normalised score) items and candidate codes of a compact-format prompt."""
    head, _, tail = content.partition(" Candidates: ")
    history = [(code, float(score)) for code, score in re.findall(r"([0-9A-Za-z]+)\|([0-9.]+),", head)]
    candidates = re.findall(r"([0-9A-Za-z]+);", tail)
    return history, candidates
