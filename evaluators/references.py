"""``module:attribute`` references to users' code: plugin evaluators and objective functions.

Why references: a run stores the reference, not the object, so ``--resume`` and worker
processes can rebuild it. The current directory is importable, as with ``python -m``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from tools.evaluator import EvaluatorSetupError


def is_reference(text: str) -> bool:
    module, _, attribute = text.partition(":")
    return bool(module and attribute) and all(
        part.isidentifier() for part in (*module.split("."), *attribute.split("."))
    )


def resolve(reference: str, what: str) -> Any:
    """The object ``reference`` names; ``what`` says what it is for in the error message."""
    if not is_reference(reference):
        raise EvaluatorSetupError(
            f"{what} {reference!r} is not a reference; write it as module:name (e.g. train:objective)"
        )
    module_name, _, attribute = reference.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise EvaluatorSetupError(
            f"cannot import module {module_name!r} of {what} {reference!r}: {error}; run from the folder that holds "
            "it or install it"
        ) from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise EvaluatorSetupError(f"module {module_name!r} has no {attribute!r} ({what} {reference!r})")
        found = getattr(found, part)
    return found


def reference_of(function: Callable[..., Any]) -> str | None:
    """``module:qualname`` when ``function`` can be imported back from it by another process, else None
    (lambdas, closures, functions of a script run as ``__main__``)."""
    module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if found is function else None
