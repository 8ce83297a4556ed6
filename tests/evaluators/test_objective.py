"""A Python objective: it reports as it trains (in this process or a forked child), and with --eval-timeout it runs
in a forked child that must die with the search."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from evaluators.objective import ObjectiveEvaluator, takes_trial
from tests.agent.objectives import space_definition
from tests.processes import assert_sigkill_leaves_no_orphan
from tools.evaluator_tool import run_evaluation
from tools.reporting import Stopped

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


# -- objectives that report: objective(config, trial) ------------------------------------------


def reporting_objective(config: dict, trial) -> float:
    """Ten epochs, each reported; returns early when told to stop."""
    for epoch in range(1, 11):
        trial.report(epoch / 10, epoch)
        if trial.should_stop():
            return -1.0  # ignored: a stopped evaluation keeps its last report
    return 1.0


def raising_objective(config: dict, trial) -> float:
    for epoch in range(1, 11):
        if trial.report(epoch / 10, epoch):
            raise Stopped
    return 1.0


def test_takes_trial_tells_one_argument_from_two() -> None:
    assert takes_trial(reporting_objective) and takes_trial(lambda *args: 0)
    assert not takes_trial(lambda config: 0) and not takes_trial(lambda config, *, trial=None: 0)


@pytest.mark.parametrize("objective", [reporting_objective, raising_objective])
@pytest.mark.parametrize("timeout_s", [None, 30.0], ids=["in-process", "forked-child"])
def test_an_objective_reports_and_stops_when_told(objective, timeout_s) -> None:
    evaluator = ObjectiveEvaluator(space_definition(), objective, timeout_s=timeout_s)
    asked: list[tuple[float, float]] = []

    def decide(step: float, value: float) -> bool:
        asked.append((step, value))
        return step >= 3

    outcome = run_evaluation(evaluator, "000", decide=decide)
    assert (outcome.status, outcome.score, outcome.fidelity) == ("stopped", 0.3, 3.0)
    assert asked == [(1.0, 0.1), (2.0, 0.2), (3.0, 0.3)]
    finished = run_evaluation(evaluator, "000", decide=lambda step, value: False)
    assert (finished.status, finished.score, finished.fidelity) == ("ok", 1.0, 10.0)


def test_a_bad_report_is_a_failed_evaluation_naming_it() -> None:
    def objective(config: dict, trial) -> float:
        trial.report(0.5, 2)
        trial.report(0.6, 2)
        return 1.0

    outcome = run_evaluation(ObjectiveEvaluator(space_definition(), objective), "000")
    assert outcome.status == "failed" and "steps must grow" in outcome.error
