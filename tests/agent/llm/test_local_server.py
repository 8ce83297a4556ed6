"""The managed ``transformers serve``: its cache sizing, and concurrent questions answered as one at a time."""

from __future__ import annotations

import json
from pathlib import Path

from agent.llm.local_server import LocalServer, cpu_cache_pages
from tests.agent.llm.questions import greedy_answers, near_questions

SHIPPED = Path(__file__).resolve().parents[3] / "models" / "lm-searcher-tiny"


def test_cpu_cache_holds_ten_short_questions_or_one_as_long_as_the_model_reads(tmp_path: Path) -> None:
    for positions, pages in ((None, 32), (2048, 32), (16384, 64), (16385, 65)):
        (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": positions}))
        assert cpu_cache_pages(tmp_path) == pages


def test_batched_answers_are_the_answers_asked_one_at_a_time() -> None:
    """Continuous batching answers a decision's ten questions together; greedy answers must not change."""
    prompts = near_questions(seed=3, count=10)
    with LocalServer(SHIPPED) as server:
        one_at_a_time = greedy_answers(server.base_url, str(server.model_path), prompts, in_flight=1)
        together = greedy_answers(server.base_url, str(server.model_path), prompts, in_flight=len(prompts))
    assert all(answer.isdigit() for answer in one_at_a_time) and len(set(one_at_a_time)) > 1  # a check with teeth
    assert together == one_at_a_time
