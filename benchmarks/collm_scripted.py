"""LLM calls and tokens of CoLLM-NAS runs on NAS-Bench-201, against the scripted server.

This is NOT a search-quality benchmark. The Navigator and the Generator are the
scripted chat model of ``tests/fake_openai.py`` behind a real local
OpenAI-compatible HTTP server: the Navigator always answers the same
~110-word direction, the Generator answers one-slot mutations of the best codes
its prompt lists. Everything else is the real run: ``Search(db).start`` with
``strategy="collm"``, the real prompts, HTTP, the Coordinator, the NB201 table
and the run store. What it measures is the cost side: LLM calls per run and the
size of what is sent. Tokens are the fake server's estimates: prompt tokens =
characters of all messages / 4, completion tokens = answer characters / 4; a real
tokenizer gives other numbers (typically within a factor of 1.5 for this text).

Usage::

    python benchmarks/collm_scripted.py --data /work/shared/data/nb201 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.driver import Search, SearchConfig  # noqa: E402
from tests.fake_openai import FakeOpenAI, collm_script  # noqa: E402
from tools.ncode import mutate, sample  # noqa: E402
from tools.spaces import nb201_space  # noqa: E402

DIRECTION = (
    "Favour cells whose edges into the output node use nor_conv_3x3 or nor_conv_1x1, since convolutions carry "
    "most of the capacity in this space; keep at least one skip_connect from the input to ease optimisation, "
    "and avoid avg_pool_3x3 and none on the edges that feed node 3. Explore variations of the two best cells by "
    "changing one edge at a time, and keep about a third of the round for untried combinations of 1x1 and 3x3 "
    "convolutions on the edges between intermediate nodes, to check whether deeper paths pay off."
)


def scripted_generator(request: dict) -> tuple[int, str, float]:
    space = nb201_space()
    text = request["messages"][-1]["content"]
    n = int(re.search(r"Write (\d+) new NCodes", text).group(1))
    best_part = text.split("Best evaluated so far")[1].split("Already evaluated")[0]
    parents = re.findall(r"^([0-4]{6}):", best_part, re.M)
    rng = random.Random(text)
    codes = [mutate(space, rng.choice(parents), rng) if parents else sample(space, rng) for _ in range(n)]
    return 200, "\n".join(codes), 0.0


def one_run(data: str, seed: int, batch: int, budget: int) -> dict:
    script = collm_script(lambda request: (200, DIRECTION, 0.0), scripted_generator)
    with FakeOpenAI(script) as server, tempfile.TemporaryDirectory() as folder:
        search = Search(Path(folder) / "runs.db")
        config = SearchConfig(
            task="nb201",
            dataset="cifar10",
            strategy="collm",
            budget=budget,
            seed=seed,
            task_options={"data": data},
            ranker_options={"base_url": server.base_url, "model": "scripted"},
            collm_options={"batch": batch},
        )
        started = time.perf_counter()
        result = search.start(config, run_id=f"collm-{seed}")
        wall = time.perf_counter() - started
        calls = search.store.llm_calls(result.run_id)
        rounds = search.store.collm_rounds(result.run_id)
        search.close()

    def tokens(role: str, field: str) -> int:
        return sum(c[field] for c in calls if c["role"] == role)

    navigator_prompts = [c["prompt_tokens"] for c in calls if c["role"] == "collm-navigator"]
    return {
        "seed": seed,
        "batch": batch,
        "evaluations": result.evaluations,
        "llm_calls": len(calls),
        "navigator_prompt_tokens": tokens("collm-navigator", "prompt_tokens"),
        "navigator_completion_tokens": tokens("collm-navigator", "completion_tokens"),
        "generator_prompt_tokens": tokens("collm-generator", "prompt_tokens"),
        "generator_completion_tokens": tokens("collm-generator", "completion_tokens"),
        "last_navigator_prompt_tokens": navigator_prompts[-1],
        "topped_up": sum(r["topped_up"] for r in rounds),
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nb201"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--batches", default="10,5", help="candidates per round, comma-separated")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "collm_scripted.json"))
    args = parser.parse_args()
    runs = [
        one_run(args.data, seed, int(batch), args.budget)
        for batch in args.batches.split(",")
        for seed in range(args.seeds)
    ]
    Path(args.out).write_text(json.dumps({"note": "scripted server; token counts are chars/4", "runs": runs}, indent=1))
    print("| --collm-batch | rounds | LLM calls | prompt tokens (nav + gen) | completion tokens | last nav prompt |")
    print("|---|---|---|---|---|---|")
    for batch in args.batches.split(","):
        rows = [r for r in runs if r["batch"] == int(batch)]

        def mean(key: str, rows: list[dict] = rows) -> float:
            return statistics.mean(r[key] for r in rows)

        print(
            f"| {batch} | {mean('llm_calls') / 2:.0f} | {mean('llm_calls'):.0f} | "
            f"{mean('navigator_prompt_tokens'):,.0f} + {mean('generator_prompt_tokens'):,.0f} | "
            f"{mean('navigator_completion_tokens') + mean('generator_completion_tokens'):,.0f} | "
            f"{mean('last_navigator_prompt_tokens'):,.0f} |"
        )


if __name__ == "__main__":
    main()
