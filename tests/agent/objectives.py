"""Objectives the Study tests import by reference (``tests.agent.objectives:NAME``), as users' modules are."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

DEPTHS, WIDTHS, ACTIVATIONS = [1, 2, 4, 8], [16, 32, 64, 128], ["relu", "gelu", "tanh"]


def space_definition() -> dict[str, Any]:
    return {
        "name": "toy",
        "slots": [
            {"name": "depth", "options": DEPTHS},
            {"name": "width", "options": WIDTHS},
            {"name": "activation", "options": ACTIVATIONS},
        ],
    }


def accuracy(config: dict[str, Any]) -> float:
    """Best at depth 4, width 64, gelu; every slot matters."""
    return round(
        0.9
        - 0.03 * abs(math.log2(config["depth"]) - 2)
        - 0.02 * abs(math.log2(config["width"]) - 6)
        - 0.01 * ACTIVATIONS.index(config["activation"]) * (config["activation"] != "gelu"),
        6,
    )


def with_metrics(config: dict[str, Any]) -> dict[str, float]:
    return {"val_acc": accuracy(config), "params": config["depth"] * config["width"]}


def slow(config: dict[str, Any]) -> float:
    time.sleep(0.3)
    return accuracy(config)


def failing_on_tanh(config: dict[str, Any]) -> float:
    if config["activation"] == "tanh":
        raise RuntimeError("diverged")
    return float("nan") if config["depth"] == 8 else accuracy(config)


def sleeping_on_depth_8(config: dict[str, Any]) -> float:
    if config["depth"] == 8:
        time.sleep(30)
    return accuracy(config)


def learning_curve(config: dict[str, Any], trial: Any) -> float:
    """Nine epochs towards ``accuracy(config)``, reported each epoch; some configurations learn faster. Ends
    when told to stop. With $LMSEARCHER_TEST_CRASH set to a file path, the first evaluation to reach epoch 3
    of depth 8 (once: the file remembers) raises KeyboardInterrupt, as a Ctrl-C mid-training would."""
    final = accuracy(config)
    speed = 0.3 + 0.25 * ACTIVATIONS.index(config["activation"]) + 0.1 * DEPTHS.index(config["depth"])
    crash = os.environ.get("LMSEARCHER_TEST_CRASH")
    for epoch in range(1, 10):
        if crash and epoch == 3 and config["depth"] == 8 and not os.path.exists(crash):
            open(crash, "w").close()
            raise KeyboardInterrupt
        trial.report(round(final * (1 - math.exp(-speed * epoch)), 6), epoch)
        if trial.should_stop():
            break
    return final


def seeded(config: dict[str, Any], trial: Any) -> float:
    """``accuracy`` moved by the seed and raised by longer training (trial.fidelity); each call is logged to
    $LMSEARCHER_TEST_LOG, and with $LMSEARCHER_TEST_CRASH the call with seed 2 raises KeyboardInterrupt once."""
    log, crash = os.environ.get("LMSEARCHER_TEST_LOG"), os.environ.get("LMSEARCHER_TEST_CRASH")
    if crash and trial.seed == 2 and not os.path.exists(crash):
        open(crash, "w").close()
        raise KeyboardInterrupt
    if log:
        with open(log, "a") as handle:
            handle.write(f"{config['depth']} {config['width']} {config['activation']} {trial.seed} {trial.fidelity}\n")
    return accuracy(config) + 0.001 * trial.seed + 0.01 * (trial.fidelity or 0)


def accuracy_and_size(config: dict[str, Any]) -> dict[str, float]:
    """Two objectives at odds: accuracy grows with depth and width, and so does the parameter count. Stops the
    search (KeyboardInterrupt) at its 7th call when $LMSEARCHER_TEST_CRASH names a file that does not exist."""
    crash = os.environ.get("LMSEARCHER_TEST_CRASH")
    if crash:
        calls = Path(crash + ".calls")
        count = int(calls.read_text()) + 1 if calls.exists() else 1
        calls.write_text(str(count))
        if count == 7 and not os.path.exists(crash):
            Path(crash).touch()
            raise KeyboardInterrupt
    return {"acc": accuracy(config), "params": config["depth"] * config["width"] ** 2}


def accuracy_elsewhere(config: dict[str, Any]) -> float:
    """``accuracy`` on "another dataset": the same ranking of configurations, on another scale."""
    return round(0.5 * accuracy(config) - 0.2, 6)


def interrupted_once(config: dict[str, Any]) -> float:
    """``accuracy``, but the first call with width 128 raises KeyboardInterrupt (once: $LMSEARCHER_TEST_CRASH
    names the file that remembers), as a Ctrl-C during an evaluation would."""
    crash = os.environ.get("LMSEARCHER_TEST_CRASH")
    if crash and config["width"] == 128 and not os.path.exists(crash):
        open(crash, "w").close()
        raise KeyboardInterrupt
    return accuracy(config)


def ranges_objective(config: dict[str, Any]) -> float:
    """A score over numeric and conditional slots (lr, depth, width_2 when depth >= 2, act)."""
    return -abs(math.log10(config["lr"]) + 2) + config["depth"] + config.get("width_2", 0) / 256


RANGES_SPACE = {
    "name": "ranges",
    "slots": [
        {"name": "lr", "low": 1e-4, "high": 1e-1, "log": True, "levels": 7},
        {"name": "depth", "type": "int", "low": 1, "high": 3},
        {"name": "width_2", "type": "int", "low": 16, "high": 256, "log": True, "levels": 5, "when": {"depth": [2, 3]}},
        {"name": "act", "options": ["relu", "gelu"]},
    ],
}


def slow_ranges(config: dict[str, Any]) -> float:
    """``ranges_objective``, slow enough for a signal to land inside an evaluation."""
    time.sleep(0.3)
    return ranges_objective(config)


def parameter_count(config: dict[str, Any]) -> dict[str, float]:
    """What a user computes from a configuration without training it (``--known-before``): accuracy_and_size's."""
    return {"params": config["depth"] * config["width"] ** 2}


COUNTED: list[dict[str, Any]] = []  # the configurations counted_parameters was called with


def counted_parameters(config: dict[str, Any]) -> dict[str, float]:
    """parameter_count, remembering each call: a code's known values are computed once however often it is asked."""
    COUNTED.append(config)
    return parameter_count(config)


def broken_count(config: dict[str, Any]) -> dict[str, float]:
    raise RuntimeError("a bug in the user's counting")


RANKS_SPACE = {"name": "ranks", "slots": [{"name": "r", "options": [4, 8, 16], "repeat": 24}]}


def rank_parameters(config: dict[str, Any]) -> dict[str, float]:
    """A LoRA-like size: every rank adds parameters. Known from the configuration alone (``--known-before``)."""
    return {"params": float(sum(config.values()))}


def rank_quality(config: dict[str, Any]) -> dict[str, float]:
    """More rank, better quality, with diminishing returns; reports the size as well."""
    return {"quality": sum(math.log(rank) for rank in config.values()), **rank_parameters(config)}
