"""The README's layout: each layer of ``agent/`` imports only the layers listed before it (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import agent

LAYERS = ["runs", "strategies", "llm", "workers", "loops", "final", "integrations", "cli"]  # README, "Layout"
ROOT = Path(agent.__file__).parent


def imported_layers(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        modules += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        for module in modules:
            parts = module.split(".")
            if parts[0] == "agent" and len(parts) > 1 and parts[1] in LAYERS:
                found.add(parts[1])
    return found


def test_each_layer_imports_only_the_layers_before_it():
    for position, layer in enumerate(LAYERS):
        files = sorted((ROOT / layer).rglob("*.py")) if (ROOT / layer).is_dir() else [ROOT / f"{layer}.py"]
        assert files, layer
        for path in files:
            later = imported_layers(path) - set(LAYERS[: position + 1])
            assert not later, f"{path.relative_to(ROOT.parent)} imports agent.{sorted(later)[0]}, a later layer"
