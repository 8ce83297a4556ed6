"""A Python objective with --eval-timeout runs in a forked child: it must die with the search."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.processes import process_gone, wait_for

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
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(pid_file)], cwd=ROOT)
    try:
        assert wait_for(pid_file.exists, 20), "the objective never started"
        child = int(pid_file.read_text())
        assert child != driver.pid and not process_gone(child)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert wait_for(lambda: process_gone(child), 5), f"the objective's process {child} outlived the search"
    finally:
        driver.kill()
        driver.wait()
