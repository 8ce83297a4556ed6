"""The LLM ranker's cost: per-decision latency, prompt size, and overhead added to the loop.

1. Latency of one decision through a managed ``transformers serve`` of a local model
   (default: the shipped LM-Searcher-tiny) with a 100-item history on NAS-Bench-201
   codes and 10 candidates: p50/p95 over ``--decisions`` decisions after one warm-up, asking a
   one-question-per-candidate model's questions one at a time and 10 at once.
2. Prompt tokens versus history length for every prompt format (per request: the
   ``near`` and ``grade`` formats ask once per candidate), counted with the model's tokenizer,
   for 6-symbol (NAS-Bench-201) and 48-symbol (diffusion LoRA) codes.
3. Loop overhead: wall time per step of a search with the LLM ranker versus the
   random ranker on the same task (the difference is what the LLM path adds).

    python benchmarks/ranker_latency.py [--model models/lm-searcher-tiny] [--decisions 50]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from transformers import AutoTokenizer

from agent.driver import Search, SearchConfig
from agent.llm.ranker import make_llm_ranker
from agent.runs.store import Observation
from agent.strategies.rankers import RankRequest
from prompts.card import DEFAULT_LOCAL_MODEL
from prompts.render import FORMATS, PER_CANDIDATE, render
from tools.evaluator import Metric
from tools.ncode import sample
from tools.spaces import diffusion_lora_space, nb201_space

METRIC = Metric("val_acc", True, "validation accuracy (%)")


def synthetic_history(space, n: int, rng: random.Random) -> list[Observation]:
    codes: dict[str, None] = {}
    while len(codes) < n + 10:
        codes.setdefault(sample(space, rng))
    return [Observation(i, code, rng.uniform(60, 95), "ok") for i, code in enumerate(codes)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def decision_latency(model: Path, decisions: int, parallel_requests: int) -> dict:
    space, rng = nb201_space(), random.Random(0)
    # Re-asks off: one request per decision (one per candidate in the grade format), so that the
    # number is the model's latency whatever its answer quality; the fallback rate is reported next to it.
    options = {"history_cap": 100, "max_reasks": 0, "parallel_requests": parallel_requests}
    ranker = make_llm_ranker(f"local:{model}", options)
    try:
        latencies, prompt_tokens, requests, fallbacks = [], [], [], 0
        for index in range(decisions + 1):
            observations = synthetic_history(space, 100, rng)  # and 10 candidates, the default pool
            request = RankRequest(space, METRIC, observations[:100], [o.ncode for o in observations[100:]], 1, rng)
            started = time.perf_counter()
            decision = ranker.rank(request)
            if index == 0:
                continue  # warm-up
            latencies.append((time.perf_counter() - started) * 1000)
            prompt_tokens.append(decision.prompt_tokens)
            requests.append(len(decision.raw_answer.split("\n---\n")))
            fallbacks += decision.fallback
    finally:
        ranker.close()
    return {
        "p50_ms": statistics.median(latencies),
        "p95_ms": percentile(latencies, 0.95),
        "prompt_tokens": statistics.median(prompt_tokens),
        "requests": statistics.median(requests),
        "fallback_rate": fallbacks / decisions,
    }


def prompt_sizes(model: Path) -> list[tuple[str, str, int, int]]:
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = []
    for space in (nb201_space(), diffusion_lora_space()):
        rng = random.Random(1)
        observations = synthetic_history(space, 200, rng)
        pool = [o.ncode for o in observations[200:]]
        for fmt in FORMATS:
            for n in (10, 25, 50, 100, 200):
                history = [(o.ncode, o.score) for o in observations[:n]]
                asked = pool[:1] if fmt in PER_CANDIDATE else pool  # one prompt per candidate
                messages = render(fmt, space.name, space.length, METRIC, history, asked, history_cap=n)
                text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                rows.append((space.name, fmt, n, len(tokenizer(text, add_special_tokens=False)["input_ids"])))
    return rows


def loop_overhead(model: Path, budget: int) -> dict:
    per_step = {}
    with tempfile.TemporaryDirectory() as folder:
        for ranker in ("random", f"local:{model}"):
            search = Search(Path(folder) / "runs.db")
            config = SearchConfig(task="nas_bench_graph", ranker=ranker, budget=budget, seed=0)
            stamps: list[float] = []
            search.start(config, on_progress=lambda _, stamps=stamps: stamps.append(time.perf_counter()))
            # From the first recorded step to the last: server start-up is left out.
            per_step[ranker.split(":")[0]] = (stamps[-1] - stamps[0]) * 1000 / (len(stamps) - 1)
            search.close()
    return per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_LOCAL_MODEL)
    parser.add_argument("--decisions", type=int, default=50)
    parser.add_argument("--loop-budget", type=int, default=40)
    args = parser.parse_args()

    print(f"## Decision latency, {args.model}, 100-item history, {args.decisions} decisions, no re-asks\n")
    print("| questions in flight | p50 ms | p95 ms | requests | prompt tokens | fallback rate |")
    print("|---|---|---|---|---|---|")
    for parallel in (1, 10):
        latency = decision_latency(args.model, args.decisions, parallel)
        print(f"| {parallel} | {latency['p50_ms']:.0f} | {latency['p95_ms']:.0f} | {latency['requests']:.0f} "
              f"| {latency['prompt_tokens']:.0f} | {latency['fallback_rate']:.2f} |")  # fmt: skip
    print()

    print("## Prompt tokens versus history length\n")
    print("| space | format | 10 | 25 | 50 | 100 | 200 |\n|---|---|---|---|---|---|---|")
    rows = prompt_sizes(args.model)
    for space in dict.fromkeys(r[0] for r in rows):
        for fmt in FORMATS:
            sizes = [str(r[3]) for r in rows if r[0] == space and r[1] == fmt]
            print(f"| {space} | {fmt} | {' | '.join(sizes)} |")

    overhead = loop_overhead(args.model, args.loop_budget)
    print(f"\n## Loop time per step, nas_bench_graph, {args.loop_budget} steps (server start-up excluded)\n")
    print("| random ranker ms | local LLM ranker ms | added by the LLM path ms |\n|---|---|---|")
    print(f"| {overhead['random']:.1f} | {overhead['local']:.1f} | {overhead['local'] - overhead['random']:.1f} |")


if __name__ == "__main__":
    main()
