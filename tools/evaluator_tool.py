"""The evaluator as a LangChain tool with structured arguments.

The tool is the one place where an evaluation can go wrong, so it is where
failures become recorded outcomes: an exception, a NaN or infinite score, or a
missing score never escapes as a crash.
"""

from __future__ import annotations

import time
import traceback

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from tools.evaluator import Evaluator, Outcome, scored_or_failed
from tools.ncode import validate


class EvaluateArgs(BaseModel):
    ncode: str = Field(description="the architecture or configuration to evaluate, as an NCode")


def run_evaluation(evaluator: Evaluator, ncode: str, simulated_cost_s: float = 0.0) -> Outcome:
    """Evaluate one code, timing it; never raises for a failure of the evaluation itself."""
    started = time.perf_counter()
    try:
        validate(evaluator.space, ncode)
        outcome = scored_or_failed(evaluator.evaluate(ncode))
    except MemoryError:
        outcome = Outcome(None, status="failed", error="out of memory")
    except Exception as error:
        last = traceback.extract_tb(error.__traceback__)[-1:]
        where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
        outcome = Outcome(None, status="failed", error=f"{type(error).__name__}: {error}{where}")
    remaining = simulated_cost_s - (time.perf_counter() - started)
    if remaining > 0:
        time.sleep(remaining)
    outcome.cost_s = outcome.cost_s or time.perf_counter() - started
    return outcome


def make_evaluator_tool(evaluator: Evaluator, simulated_cost_s: float = 0.0) -> StructuredTool:
    """``simulated_cost_s`` pads each evaluation to that many seconds (benchmarks, resume tests)."""

    def evaluate(ncode: str) -> dict:
        outcome = run_evaluation(evaluator, ncode, simulated_cost_s)
        return {
            "score": outcome.score,
            "metrics": outcome.metrics,
            "cost_s": outcome.cost_s,
            "status": outcome.status,
            "error": outcome.error,
        }

    return StructuredTool.from_function(
        evaluate,
        name=f"evaluate_{evaluator.space.name}",
        description=f"Evaluate an NCode of {evaluator.describe()}",
        args_schema=EvaluateArgs,
    )
