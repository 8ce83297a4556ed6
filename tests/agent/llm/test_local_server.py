"""The managed ``transformers serve``: its cache sizing, and concurrent questions answered as one at a time."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from agent.llm.local_server import LocalServer, cpu_cache_pages
from prompts.render import render_each
from tools.evaluator import Metric
from tools.ncode import sample
from tools.spaces import nb201_space

SHIPPED = Path(__file__).resolve().parents[3] / "models" / "lm-searcher-tiny"


def test_cpu_cache_holds_ten_short_questions_or_one_as_long_as_the_model_reads(tmp_path: Path) -> None:
    for positions, pages in ((None, 32), (2048, 32), (16384, 64), (16385, 65)):
        (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": positions}))
        assert cpu_cache_pages(tmp_path) == pages


def test_batched_answers_are_the_answers_asked_one_at_a_time() -> None:
    """Continuous batching answers a decision's ten questions together; greedy answers must not change."""
    space, rng = nb201_space(), random.Random(3)
    codes = list(dict.fromkeys(sample(space, rng) for _ in range(60)))
    history = [(code, rng.uniform(60, 95)) for code in codes[:40]]
    prompts = render_each("near", space.length, Metric("acc", True, ""), history, codes[40:50], 24)
    with LocalServer(SHIPPED) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY")

        def ask(messages: list[dict[str, str]]) -> str:
            answer = client.chat.completions.create(
                model=str(server.model_path), messages=messages, temperature=0.0, max_tokens=4
            )
            return answer.choices[0].message.content

        one_at_a_time = [ask(messages) for messages in prompts]
        with ThreadPoolExecutor(len(prompts)) as pool:
            together = list(pool.map(ask, prompts))
    assert all(answer.isdigit() for answer in one_at_a_time) and len(set(one_at_a_time)) > 1  # a check with teeth
    assert together == one_at_a_time
