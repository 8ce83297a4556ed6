"""Where benchmark tables are read from: a flag, an environment variable, or ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

from tools.evaluator import EvaluatorSetupError

DATA_ENV = "LMSEARCHER_DATA"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_root(explicit: str | Path | None = None) -> Path | None:
    """The benchmark data folder: ``explicit``, else $LMSEARCHER_DATA, else ../shared/data if present."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    default = PROJECT_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


def find_file(name: str, subdir: str, explicit: str | Path | None, origin: str) -> Path:
    """Locate ``name`` in the data folder (or its ``subdir``); fail with where to get it."""
    root = data_root(explicit)
    candidates = [] if root is None else [root / name, root / subdir / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = " or ".join(str(c) for c in candidates) or f"--data PATH or ${DATA_ENV}"
    raise EvaluatorSetupError(
        f"benchmark file {name} not found (looked in {where}); download it from {origin} "
        f"and pass its folder with --data PATH or ${DATA_ENV}"
    )
