"""Questions of the shipped model's kind, and a served model's greedy answers to them: what the tests that
compare serving stacks (transformers serve, vLLM, in-process) ask each of them."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import openai

from prompts.render import render_each
from tools.evaluator import Metric
from tools.ncode import sample
from tools.spaces import nb201_space

HISTORY = 40  # scored NAS-Bench-201 codes the questions read


def near_questions(seed: int, count: int) -> list[list[dict[str, str]]]:
    """``count`` near-format questions (history cap 24) about unseen codes, over a random 40-code history."""
    space, rng = nb201_space(), random.Random(seed)
    codes = list(dict.fromkeys(sample(space, rng) for _ in range(2 * (HISTORY + count))))
    history = [(code, rng.uniform(60, 95)) for code in codes[:HISTORY]]
    return render_each("near", space.length, Metric("acc", True, ""), history, codes[HISTORY : HISTORY + count], 24)


def greedy_answers(base_url: str, model: str, prompts: list[list[dict[str, str]]], in_flight: int) -> list[str]:
    """The server's greedy answers, in order, with up to ``in_flight`` questions asked at once."""
    client = openai.OpenAI(base_url=base_url, api_key="EMPTY")

    def ask(messages: list[dict[str, str]]) -> str:
        reply = client.chat.completions.create(model=model, messages=messages, temperature=0.0, max_tokens=4)
        return reply.choices[0].message.content

    if in_flight <= 1:
        return [ask(messages) for messages in prompts]
    with ThreadPoolExecutor(in_flight) as pool:
        return list(pool.map(ask, prompts))
