"""CoLLM-NAS end to end over real HTTP: the Navigator and the Generator are a real local
OpenAI-compatible server (tests/fake_openai.py) whose chat model is scripted, told apart by
their system prompts. The words are scripted because no model small enough to run here can
follow CoLLM-NAS's instructions (write a search direction, then valid NCodes); everything
else (HTTP, retries, parsing, the graph, the store, resume) is the real code path, on the
embedded NAS-Bench-Graph task."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.driver import Search, SearchConfig
from agent.llm.ranker import RankerSetupError, RankerUnavailable
from agent.loops import collm
from agent.loops.collm import parse_candidates
from agent.strategies.proposers import ProposalContext
from evaluators.registry import TaskOptions, make_evaluator
from prompts.collm import GENERATOR_MARK, NAVIGATOR_MARK
from tests.fake_openai import FakeOpenAI, collm_script
from tools.ncode import sample, to_indices

EVALUATOR = make_evaluator("nas_bench_graph", TaskOptions())
SPACE = EVALUATOR.space


def fresh_codes(n: int, seed: int = 0) -> list[str]:
    """Distinct valid canonical codes, in a fixed order."""
    rng, codes = random.Random(seed), []
    while len(codes) < n:
        code = sample(SPACE, rng)
        if code not in codes:
            codes.append(code)
    return codes


def collm_config(base_url: str, budget: int = 12, batch: int = 4, **collm: object) -> SearchConfig:
    return SearchConfig(
        strategy="collm",
        budget=budget,
        seed=1,
        base_url=base_url,
        model="scripted",
        timeout_s=5.0,
        llm_backoff_s=0.01,
        llm_retries=1,
        collm_batch=batch,
        **collm,
    )


def navigator(request: dict) -> tuple[int, str, float]:
    turn = sum(m["role"] == "user" for m in request["messages"])
    return 200, f"Direction {turn}: prefer gcn and sage layers, avoid fc.", 0.0


def lines_of(codes: Iterator[str], n: int = 4):
    return lambda request: (200, "\n".join(next(codes) for _ in range(n)), 0.0)


def requests_of(server: FakeOpenAI, mark: str) -> list[dict]:
    return [r for r in server.requests if r["messages"][0]["content"].startswith(mark)]


def evaluated(search: Search, run_id: str) -> list[str]:
    return [o.ncode for _, o in search.store.observations(run_id)]


def test_a_run_spends_its_budget_on_the_generators_unique_valid_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-COLLM-5a4b3c"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    codes = fresh_codes(12)
    with FakeOpenAI(collm_script(navigator, lines_of(iter(codes)))) as server:
        search = Search(tmp_path / "runs.db")
        result = search.start(collm_config(server.base_url), run_id="r")
    assert result.evaluations == 12 and evaluated(search, "r") == codes
    assert [r["topped_up"] for r in search.store.collm_rounds("r")] == [0, 0, 0]
    calls = search.store.llm_calls("r")
    assert [(c["iteration"], c["role"]) for c in calls] == [
        (i, role) for i in range(3) for role in ("collm-navigator", "collm-generator")
    ]
    for call in calls:
        assert call["prompt_tokens"] > 100 and call["completion_tokens"] > 0 and call["latency_s"] > 0
        assert call["raw_answer"] and call["error"] is None and call["model"] == "scripted"
    assert all(request["temperature"] == 0.6 for request in server.requests)
    # The Navigator keeps one conversation, and it is the one stored with the run.
    asked = requests_of(server, NAVIGATOR_MARK)
    assert [len(r["messages"]) for r in asked] == [2, 4, 6]
    conversation = search.store.conversation("r")
    assert [{"role": m["role"], "content": m["content"]} for m in conversation[:-1]] == asked[-1]["messages"]
    assert conversation[-1]["content"].startswith("Direction 3:")
    round_two = asked[1]["messages"][-1]["content"]
    assert all(code in round_two for code in codes[:4]) and "Round 1 results" in round_two
    assert "op_0=" in round_two, "results are shown decoded, not only as codes"
    # The task description comes from the space's own definition.
    first = asked[0]["messages"][1]["content"]
    assert "op_0 (operation of GNN layer 1): 0=gat, 1=gcn" in first and "maximise val_acc" in first
    # The Generator is stateless: the latest direction and the evaluated codes, no conversation.
    generated = requests_of(server, GENERATOR_MARK)
    assert [len(r["messages"]) for r in generated] == [2, 2, 2]
    assert "Direction 2:" in generated[1]["messages"][1]["content"]
    assert all(code in generated[2]["messages"][1]["content"] for code in codes[:8])
    # The key is sent, never stored.
    search.close()
    assert server.headers[0]["authorization"] == f"Bearer {secret}"
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), f"the key leaked into {path.name}"


def test_the_navigator_is_sent_its_first_and_latest_rounds_only_when_capped(tmp_path: Path) -> None:
    thinking = lambda request: (200, "<think>long reasoning</think>" + navigator(request)[1], 0.0)  # noqa: E731
    with FakeOpenAI(collm_script(thinking, lines_of(iter(fresh_codes(16, seed=6))))) as server:
        search = Search(tmp_path / "runs.db")
        search.start(collm_config(server.base_url, budget=16, navigator_rounds=1), run_id="r")
    asked = requests_of(server, NAVIGATOR_MARK)
    assert [len(r["messages"]) for r in asked] == [2, 4, 6, 6]
    last = [m["content"] for m in asked[3]["messages"]]
    assert last[1].startswith('Search space "nas_bench_graph"') and last[2].startswith("Direction 1:")
    assert "Round 2 results" in last[3] and last[4].startswith("Direction 3:") and "Round 3 results" in last[5]
    assert len(search.store.conversation("r")) == 9, "the store keeps the whole conversation"
    assert all("<think>" not in m["content"] for m in search.store.conversation("r"))
    assert all("<think>" in c["raw_answer"] for c in search.store.llm_calls("r") if c["role"] == "collm-navigator")


def test_invalid_and_duplicate_candidates_are_dropped_and_topped_up(tmp_path: Path) -> None:
    a, b, c = fresh_codes(3, seed=5)
    answers = iter(
        [
            f"Here are my candidates:\n1. {a}\n2. `{a}`\n3. 99999\n4. 0123\n",  # a twice, '9' is no option, too short
            json.dumps([a, b, list(to_indices(SPACE, c))]),  # a already evaluated; c as option indices
            "I am not sure which architectures to try.",  # no code at all
        ]
    )
    with FakeOpenAI(collm_script(navigator, lambda request: (200, next(answers), 0.0))) as server:
        search = Search(tmp_path / "runs.db")
        result = search.start(collm_config(server.base_url), run_id="r")
    codes = evaluated(search, "r")
    assert result.evaluations == 12 and len(set(codes)) == 12
    assert {a, b, c} <= set(codes)
    rounds = [(r["valid"], r["invalid"], r["duplicates"], r["topped_up"]) for r in search.store.collm_rounds("r")]
    assert rounds == [(1, 2, 1, 3), (2, 0, 1, 2), (0, 0, 0, 4)]
    assert json.loads(search.store.collm_rounds("r")[2]["proposed"]) == []
    note = requests_of(server, NAVIGATOR_MARK)[1]["messages"][-1]["content"]
    assert "2 invalid, 1 already evaluated or repeated. 3 random code(s) filled the round." in note


def test_reaching_the_target_stops_the_search_early(tmp_path: Path) -> None:
    pool = fresh_codes(40, seed=2)
    scores = {code: EVALUATOR.evaluate(code).score for code in pool}
    best = max(pool, key=scores.get)
    lower = [code for code in pool if scores[code] < scores[best]]
    answers = iter([lower[:4], [*lower[4:7], best], lower[7:11]])
    with FakeOpenAI(collm_script(navigator, lambda request: (200, "\n".join(next(answers)), 0.0))) as server:
        search = Search(tmp_path / "runs.db")
        result = search.start(collm_config(server.base_url, budget=40, target=scores[best]), run_id="r")
    assert result.status == "finished" and result.evaluations == 8 and result.best_ncode == best
    assert len(requests_of(server, NAVIGATOR_MARK)) == 2 and len(requests_of(server, GENERATOR_MARK)) == 2
    assert "the search stops once it is reached" in requests_of(server, NAVIGATOR_MARK)[0]["messages"][1]["content"]


@pytest.mark.parametrize("failing", [NAVIGATOR_MARK, GENERATOR_MARK], ids=["navigator", "generator"])
def test_a_server_that_stays_down_stops_the_run_and_resume_continues_the_conversation(
    tmp_path: Path, failing: str
) -> None:
    codes = iter(fresh_codes(12, seed=3))
    generator = lines_of(codes)
    asked = {"failing": 0}

    def down_from_round_three(request: dict) -> tuple[int, str, float]:
        if request["messages"][0]["content"].startswith(failing):
            asked["failing"] += 1
            if asked["failing"] > 2:
                return 503, "overloaded", 0.0
        return (navigator if failing == NAVIGATOR_MARK else generator)(request)

    script = (
        collm_script(down_from_round_three, generator)
        if failing == NAVIGATOR_MARK
        else collm_script(navigator, down_from_round_three)
    )
    db = tmp_path / "runs.db"
    with FakeOpenAI(script) as server:
        port = server.server.server_address[1]
        search = Search(db)
        with pytest.raises(RankerUnavailable, match="failed 2 times"):
            search.start(collm_config(server.base_url), run_id="r")
        run = search.store.get_run("r")
        assert run["status"] == "stopped" and "RankerUnavailable" in run["error"]
        before = evaluated(search, "r")
        conversation = search.store.conversation("r")
        failed = [c for c in search.store.llm_calls("r") if c["error"] is not None]
        search.close()
    assert len(before) == 8
    assert [(c["iteration"], c["error"] is not None) for c in failed] == [(2, True)]
    with FakeOpenAI(collm_script(navigator, generator), port=port) as healthy:
        search = Search(db)
        result = search.resume("r")
    after = evaluated(search, "r")
    assert result.evaluations == 12 and len(set(after)) == 12 and after[:8] == before
    assert all(c["error"] is None for c in search.store.llm_calls("r")), "the failed call was made again"
    resumed_navigator = requests_of(healthy, NAVIGATOR_MARK)
    resumed_generator = requests_of(healthy, GENERATOR_MARK)
    if failing == NAVIGATOR_MARK:
        assert len(conversation) == 5  # system, then (user, assistant) for rounds 1 and 2
        (request,) = resumed_navigator
        previous = [{"role": m["role"], "content": m["content"]} for m in conversation]
        assert request["messages"][:5] == previous, "the resumed Navigator lost its conversation"
        assert "Round 2 results" in request["messages"][5]["content"]
    else:
        assert len(conversation) == 7 and resumed_navigator == [], "an answered Navigator turn was asked again"
        (request,) = resumed_generator
        assert conversation[-1]["content"] in request["messages"][1]["content"]
    assert len(search.store.conversation("r")) == 7


def test_a_server_that_is_down_fails_before_any_run_exists(tmp_path: Path) -> None:
    with FakeOpenAI(collm_script(navigator, navigator)) as server:
        dead = server.base_url
    search = Search(tmp_path / "runs.db")
    with pytest.raises(RankerSetupError, match="CoLLM-NAS navigator: cannot reach"):
        search.start(collm_config(dead), run_id="r")
    with pytest.raises(RankerSetupError, match="--base-url URL and --model NAME"):
        search.start(SearchConfig(strategy="collm"), run_id="r")
    assert search.store.list_runs() == []


def test_cli_separate_navigator_and_generator_servers_then_show_and_export(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    codes = iter(fresh_codes(6, seed=4))
    db = str(tmp_path / "runs.db")
    with (
        FakeOpenAI(collm_script(navigator, navigator)) as navigator_server,
        FakeOpenAI(collm_script(navigator, lines_of(codes, 3))) as generator_server,
    ):
        flags = ["--strategy", "collm", "--base-url", navigator_server.base_url, "--model", "nav"]
        flags += ["--generator-base-url", generator_server.base_url, "--generator-model", "gen"]
        flags += ["--collm-batch", "3", "--collm-temperature", "0.2", "--constraints", "at most 2M parameters"]
        assert main([*flags, "--budget", "6", "--db", db, "--run-id", "c", "--quiet"]) == 0
    assert {r["model"] for r in navigator_server.requests} == {"nav"}
    assert {r["model"] for r in generator_server.requests} == {"gen"}
    assert len(navigator_server.requests) == 2 and len(generator_server.requests) == 2
    assert all(r["temperature"] == 0.2 for r in navigator_server.requests + generator_server.requests)
    assert "Resource constraints: at most 2M parameters" in navigator_server.requests[0]["messages"][1]["content"]
    capsys.readouterr()
    assert main(["show", "c", "--db", db, "--plot", str(tmp_path / "c.png")]) == 0
    shown = capsys.readouterr().out
    assert "2 collm-navigator, 2 collm-generator" in shown and "prompt tokens" in shown and "topped up" in shown
    assert main(["export", "c", "--db", db, "--format", "json", "--out", str(tmp_path / "c.json")]) == 0
    exported = json.loads((tmp_path / "c.json").read_text())
    assert len(exported["llm_calls"]) == 4 and len(exported["conversation"]) == 5
    assert [r["model"] for r in exported["llm_calls"]] == ["nav", "gen", "nav", "gen"]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("01234\n12345", ["01234", "12345"]),
        ('```json\n["01234", "12345"]\n```', ["01234", "12345"]),
        ("[[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]", ["01234", "12345"]),
        ("Candidates:\n1. 01234\n2) `12345`,\n- '23456'", ["01234", "12345", "23456"]),
        ("Candidate 1: 01234\nCandidate 2: 12345", ["01234", "12345"]),
        ("01234, 12345, 23456", ["01234", "12345", "23456"]),
        ("0, 1, 2, 3, 4\n1-2-3-4-5", ["01234", "12345"]),
        ("<think>maybe 99999</think>\n01234", ["01234"]),
        ("I would try 01234 (deep) and then 12345 (wide).", ["01234", "12345"]),
        ("Nothing useful here at all.", []),
        ("0123\n012345", ["0123", "012345"]),  # wrong lengths are kept: the Coordinator counts them invalid
    ],
)
def test_parse_candidates_is_lenient(answer: str, expected: list[str]) -> None:
    assert parse_candidates(answer, 5) == expected


def test_candidates_known_to_break_a_constraint_are_rejected_before_evaluation(tmp_path: Path) -> None:
    """NAS-Bench-Graph knows a code's parameter count without evaluating it: the Coordinator spends no budget on a
    candidate over the limit, tells the Navigator why, walks it inside the limit (the Generator's code changed one
    slot at a time until it fits) and fills what is still short with random codes under it."""
    limit = 1.28
    codes = fresh_codes(40, seed=3)
    heavy = [c for c in codes if EVALUATOR.known_before(c)["params_m"] > limit][:3]
    light = [c for c in codes if EVALUATOR.known_before(c)["params_m"] <= limit][:3]
    answers = iter(["\n".join([heavy[0], light[0], heavy[1], light[1]]), "\n".join([heavy[2], light[2]]), ""])
    with FakeOpenAI(collm_script(navigator, lambda request: (200, next(answers), 0.0))) as server:
        search = Search(tmp_path / "runs.db")
        result = search.start(collm_config(server.base_url, constraint=[f"params_m<={limit}"]), run_id="r")
    stored = [o for _, o in search.store.observations("r")]
    assert result.evaluations == 12 and not set(heavy) & {o.ncode for o in stored}
    assert set(light) <= {o.ncode for o in stored}
    assert all(o.status == "ok" for o in stored), "every code evaluated keeps the limit, top-ups included"
    rounds = search.store.collm_rounds("r")
    walked = [json.loads(r["repaired"]) for r in rounds]
    assert [(r["valid"], len(w), r["topped_up"]) for r, w in zip(rounds, walked, strict=True)] == [
        (2, 2, 0), (1, 1, 2), (0, 0, 4)
    ], "valid as written, walked inside, random"  # fmt: skip
    assert [source for source, _ in walked[0] + walked[1]] == heavy
    for _, code in walked[0] + walked[1]:
        assert EVALUATOR.known_before(code)["params_m"] <= limit and code in {o.ncode for o in stored}
    assert [code for code, _ in json.loads(rounds[0]["rejected"])] == heavy[:2]
    reason = json.loads(rounds[1]["rejected"])[0][1]
    assert reason == f"params_m = {EVALUATOR.known_before(heavy[2])['params_m']:g} breaks params_m<=1.28"
    note = requests_of(server, NAVIGATOR_MARK)[1]["messages"][-1]["content"]
    assert f"2 rejected before evaluation as infeasible ({heavy[0]}: params_m = " in note
    assert (
        f"2 of them walked inside the constraints, one slot at a time, and evaluated instead ({heavy[0]} -> "
        f"{walked[0][0][1]}" in note
    )
    assert "params_m<=1.28 (a hard limit" in requests_of(server, NAVIGATOR_MARK)[0]["messages"][1]["content"]


def test_top_ups_under_a_limit_random_draws_rarely_keep_are_walked_inside(monkeypatch, caplog) -> None:
    """About 2 in 100 random NAS-Bench-Graph codes keep params_m<=0.57: with 20 draws allowed, random top-ups fall
    short, so the rejected draws are walked inside and the round is full, every code under the limit."""
    monkeypatch.setattr(collm, "TOP_UP_DRAWS", 20)
    judged = make_evaluator("nas_bench_graph", TaskOptions(constraint=["params_m<=0.57"]))
    context = ProposalContext(SPACE, judged.metric, [], set(), random.Random(0))
    found = collm.feasible_random(context, 4, set(), judged)
    assert len(set(found)) == 4 and all(judged.known_before(code)["params_m"] <= 0.57 for code in found)
    assert "the round is smaller" not in caplog.text
