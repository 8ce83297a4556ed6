"""A Python objective with --eval-timeout runs in a forked child: it must die with the search."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.processes import assert_sigkill_leaves_no_orphan

ROOT = Path(__file__).resolve().parents[2]

DRIVER = """
import os, sys, time
from evaluators.objective import ObjectiveEvaluator
from tests.agent.objectives import space_definition

def objective(config):
    with open(sys.argv[1] + ".tmp", "w") as file:
        file.write(str(os.getpid()))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(120)
    return 1.0

ObjectiveEvaluator(space_definition(), objective, timeout_s=300).evaluate("000")
"""


def test_killing_the_search_with_sigkill_stops_the_objective(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    assert_sigkill_leaves_no_orphan([sys.executable, "-c", DRIVER, str(pid_file)], pid_file, ROOT, "the objective")
