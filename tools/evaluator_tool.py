"""The evaluator as a LangChain tool with structured arguments.

The tool is the one place where an evaluation can go wrong, so it is where
failures become recorded outcomes: an exception, a NaN or infinite score, or a
missing score never escapes as a crash.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from tools.evaluator import Evaluator, Outcome, scored_or_failed
from tools.ncode import validate
from tools.reporting import Decide, Reporter, Stopped


class EvaluateArgs(BaseModel):
    ncode: str = Field(description="the architecture or configuration to evaluate, as an NCode")


def run_evaluation(
    evaluator: Evaluator, ncode: str, simulated_cost_s: float = 0.0, decide: Decide | None = None
) -> Outcome:
    """Evaluate one code, timing it; never raises for a failure of the evaluation itself. ``decide`` answers
    its intermediate reports (the run's scheduler); None: reports are kept, nothing is stopped."""
    started = time.perf_counter()
    reporter = Reporter(decide)
    try:
        validate(evaluator.space, ncode)
        outcome = scored_or_failed(evaluator.evaluate_reporting(ncode, reporter))
    except Stopped:
        outcome = Outcome(None, status="failed", error="raised Stopped without being told to stop")
    except MemoryError:
        outcome = Outcome(None, status="failed", error="out of memory")
    except Exception as error:
        last = traceback.extract_tb(error.__traceback__)[-1:]
        where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
        outcome = Outcome(None, status="failed", error=f"{type(error).__name__}: {error}{where}")
    remaining = simulated_cost_s - (time.perf_counter() - started)
    if remaining > 0:
        time.sleep(remaining)
    outcome = with_reports(outcome, reporter)
    outcome.cost_s = outcome.cost_s or time.perf_counter() - started
    return outcome


def with_reports(outcome: Outcome, reporter: Reporter) -> Outcome:
    """The outcome as the reports say: a stopped evaluation keeps its last report as its score, whatever it
    returned (a command ended by SIGTERM exits non-zero); a finished one is at its last reported step."""
    if reporter.stopped and reporter.last is not None:
        step, value = reporter.last
        return Outcome(value, outcome.metrics, outcome.cost_s, "stopped", None, step, outcome.values)
    if outcome.fidelity is None and reporter.last is not None and outcome.status == "ok":
        outcome.fidelity = reporter.last[0]
    return outcome


def make_evaluator_tool(
    evaluator: Evaluator, simulated_cost_s: float = 0.0, decide: Callable[[str], Decide | None] | None = None
) -> StructuredTool:
    """``simulated_cost_s`` pads each evaluation to that many seconds (benchmarks, resume tests); ``decide``
    gives each code's answerer of intermediate reports (the run's scheduler)."""

    def evaluate(ncode: str) -> dict:
        outcome = run_evaluation(evaluator, ncode, simulated_cost_s, decide(ncode) if decide else None)
        return {
            "score": outcome.score,
            "metrics": outcome.metrics,
            "cost_s": outcome.cost_s,
            "status": outcome.status,
            "error": outcome.error,
            "fidelity": outcome.fidelity,
            "values": outcome.values,
        }

    return StructuredTool.from_function(
        evaluate,
        name=f"evaluate_{evaluator.space.name}",
        description=f"Evaluate an NCode of {evaluator.describe()}",
        args_schema=EvaluateArgs,
    )
