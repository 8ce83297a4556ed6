"""The generation ablation: the LLM writes codes (scripted server over real HTTP, see tests/fake_openai.py)."""

from __future__ import annotations

from pathlib import Path

from agent.driver import Search, SearchConfig
from tests.fake_openai import FakeOpenAI


def test_generated_codes_are_used_and_bad_ones_replaced(tmp_path: Path) -> None:
    answers = iter(["Try 00000 next.", "00000", "not a code", "x", "y", "z"])  # valid, then seen, then garbage

    def script(request: dict, candidates: list[str]) -> tuple[int, str, float]:
        return 200, next(answers, "nothing"), 0.0

    with FakeOpenAI(script) as server:
        config = SearchConfig(
            ranker="llm", proposer="generate", pool_size=1, budget=3, base_url=server.base_url, model="scripted",
            llm_backoff_s=0.01, max_reasks=1,
        )  # fmt: skip
        search = Search(tmp_path / "runs.db")
        result = search.start(config, run_id="g")
    codes = [o.ncode for _, o in search.store.observations("g")]
    assert result.evaluations == 3 and len(set(codes)) == 3
    assert codes[0] == "00000", "the model's code is evaluated first"
    assert all(len(code) == 5 for code in codes)
    # 1 question for the first code, 2 (one re-ask) for each of the next two: never more.
    assert len(server.requests) == 5
    assert "Candidates" not in server.requests[0]["messages"][0]["content"]
