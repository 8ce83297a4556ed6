"""One short search through the real loop, shared by the training evaluators' tests."""

from __future__ import annotations

import math
from pathlib import Path

from agent.driver import Search, SearchConfig
from tools.evaluator import Evaluator


def assert_short_search_finishes(tmp_path: Path, task: str, budget: int = 3) -> None:
    """A random search of ``budget`` steps finishes with finite scores and recorded costs."""
    search = Search(tmp_path / "runs.db")
    try:
        result = search.start(SearchConfig(task=task, budget=budget, ranker="random", seed=1))
        rows = list(search.store.evaluations(result.run_id))
    finally:
        search.close()
    assert result.status == "finished" and result.evaluations == budget
    assert math.isfinite(result.best_score)
    assert all(row["status"] == "ok" and row["cost_s"] > 0 for row in rows)


def reported(evaluator: Evaluator, code: str) -> set[str]:
    """Every metric name one result of ``code`` gives: its score, metrics, final-report metrics, known before."""
    outcome = evaluator.evaluate(code)
    assert outcome.status == "ok", outcome.error
    return {evaluator.metric.name, *outcome.metrics, *evaluator.final_metrics(code), *evaluator.known_before(code)}
