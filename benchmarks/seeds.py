"""The ``--seeds`` argument every benchmark script takes (a plain module: the scripts run from any venv)."""


def parse_seeds(text: str) -> list[int]:
    """'0-9' or '0,3,5' or '2'."""
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds
