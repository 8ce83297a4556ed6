"""A ranker that runs but is misconfigured, over real HTTP to the scripted server: the model's card sets the
prompt format, a guessed format is warned about, logprobs grade candidates, decisions that keep falling back
stop the run, and 4xx answers are configuration errors (exit 2) while 5xx stay transient (exit 3)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.driver import Search, SearchConfig
from agent.llm import ranker as ranker_module
from agent.llm.ranker import RankerSetupError
from agent.loops.collm import make_collm_agents
from prompts.grade import unscored
from tests.fake_openai import FakeOpenAI

GUESS = "the prompt format is a guess"


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guessed-format warning is printed once per process; each test starts unwarned."""
    monkeypatch.setattr(ranker_module, "GUESS_WARNED", set())


def llm_config(base_url: str, budget: int, **options: object) -> SearchConfig:
    settings = {"base_url": base_url, "model": "scripted", "timeout_s": 5.0, "llm_backoff_s": 0.01, **options}
    return SearchConfig(ranker="llm", budget=budget, seed=1, **settings)


def search_argv(server: FakeOpenAI, db: Path, budget: int, *flags: str) -> list[str]:
    return [
        "--ranker", "llm", "--base-url", server.base_url, "--model", "scripted", "--timeout", "5",
        "--llm-backoff", "0.01", "--budget", str(budget), "--seed", "1", "--db", str(db), "--run-id", "r", "--quiet",
        *flags,
    ]  # fmt: skip


def first_candidate(request: dict, candidates: list[str]) -> tuple[int, str, float]:
    return 200, candidates[0], 0.0


def digit_sum_grade(code: str) -> int:
    return min(9, sum(map(int, code)) // 2)


def by_digit_sum(request: dict, candidates: list[str]) -> tuple[int, str, float]:
    [code] = candidates
    return 200, str(digit_sum_grade(code)), 0.0


def always_one(request: dict, candidates: list[str]) -> tuple[int, str, float]:
    """LM-Searcher-tiny asked in a format it was not trained on (issue 18): "1" names no candidate."""
    return 200, "1", 0.0


def stored(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(query).fetchall()


# --- the model's card ----------------------------------------------------------------------------


@pytest.mark.parametrize("as_file", [False, True], ids=["folder", "lmsearcher.json"])
def test_model_card_sets_the_prompt_format_and_history_cap(tmp_path: Path, as_file: bool) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "lmsearcher.json").write_text(json.dumps({"prompt_format": "grade", "history_cap": 3, "steps": 9}))
    card = folder / "lmsearcher.json" if as_file else folder
    with FakeOpenAI(by_digit_sum) as server:
        Search(tmp_path / "runs.db").start(llm_config(server.base_url, 6, model_card=str(card)), run_id="r")
    prompt = server.requests[-1]["messages"][0]["content"]
    assert " Code: " in prompt, "the card's grade format: one candidate per prompt"
    assert len(unscored(prompt.split(" Code: ")[0])) == 3, "the card's history cap"


def test_the_cards_slot_weighting_reaches_the_near_prompts_and_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The same run (every candidate graded 5, so the same picks) asked with and without the near format's slot
    weighting: the prompts differ once the history says which slots matter; a weighting outside [0, 1] stops the
    run before it starts."""
    prompts = {}
    for weighting in (0.0, 1.0, 2.0):
        folder = tmp_path / f"card{weighting:g}"
        folder.mkdir()
        card = {"prompt_format": "near", "history_cap": 24, "slot_weighting": weighting}
        (folder / "lmsearcher.json").write_text(json.dumps(card))
        with FakeOpenAI(lambda request, candidates: (200, "5", 0.0)) as server:
            argv = search_argv(server, tmp_path / f"{weighting:g}.db", 12, "--model-card", str(folder))
            code = main(argv)
        prompts[weighting] = [request["messages"][0]["content"] for request in server.requests]
        if weighting <= 1:
            out = capsys.readouterr().out
            assert code == 0 and "near, history cap 24" in out and ("slot weighting 1" in out) == (weighting == 1)
    assert len(prompts[0.0]) == len(prompts[1.0]) > 0 and prompts[0.0] != prompts[1.0]
    assert code == 2 and not prompts[2.0] and "slot_weighting must be in [0, 1]" in capsys.readouterr().err


def test_explicit_flags_win_over_the_card(tmp_path: Path) -> None:
    (tmp_path / "lmsearcher.json").write_text(json.dumps({"prompt_format": "grade", "history_cap": 3}))
    with FakeOpenAI(first_candidate) as server:
        config = llm_config(server.base_url, 6, model_card=str(tmp_path), prompt_format="paper")
        Search(tmp_path / "runs.db").start(config, run_id="r")
    prompt = server.requests[-1]["messages"][0]["content"]
    assert "\nCandidate:\n" in prompt and prompt.count("NCode: ") == 3, "the flag's format, the card's cap"


def test_a_missing_card_fails_before_any_run(tmp_path: Path) -> None:
    search = Search(tmp_path / "runs.db")
    with (
        FakeOpenAI(first_candidate) as server,
        pytest.raises(RankerSetupError, match=r"--model-card .*: no lmsearcher\.json there"),
    ):
        search.start(llm_config(server.base_url, 3, model_card=str(tmp_path / "nowhere")))
    assert search.store.list_runs() == []


def test_bench_passes_the_card_to_a_served_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "lmsearcher.json").write_text(json.dumps({"prompt_format": "grade", "history_cap": 3}))
    argv = ["bench", "--task", "nas_bench_graph", "--methods", "llm-random-pool", "--seeds", "1", "--budget", "5"]
    with FakeOpenAI(by_digit_sum) as server:
        served = ["--base-url", server.base_url, "--served-model", "scripted", "--out", str(tmp_path / "b")]
        assert main([*argv, *served, "--model-card", str(tmp_path / "nowhere")]) == 2
        assert "no lmsearcher.json there" in capsys.readouterr().err and not server.requests
        assert main([*argv, *served, "--model-card", str(tmp_path)]) == 0
    assert GUESS not in capsys.readouterr().err
    prompt = server.requests[-1]["messages"][0]["content"]
    assert " Code: " in prompt and len(unscored(prompt.split(" Code: ")[0])) == 3


def test_a_guessed_format_is_warned_once_and_the_summary_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with FakeOpenAI(first_candidate) as server:
        assert main(search_argv(server, tmp_path / "a.db", 3)) == 0
        first = capsys.readouterr()
        assert main(search_argv(server, tmp_path / "b.db", 3)) == 0
        second = capsys.readouterr()
        (tmp_path / "lmsearcher.json").write_text(json.dumps({"prompt_format": "paper", "history_cap": 7}))
        ranker_module.GUESS_WARNED.clear()
        assert main(search_argv(server, tmp_path / "c.db", 3, "--model-card", str(tmp_path))) == 0
        carded = capsys.readouterr()
    warnings = [line for line in first.err.splitlines() if GUESS in line]
    assert len(warnings) == 1 and "--model-card" in warnings[0] and "compact, history cap 200" in warnings[0]
    assert GUESS not in second.err, "once per process"
    assert GUESS not in carded.err
    assert "compact, history cap 200 (a guess" in first.out and "fallback rate" in first.out
    assert "0.000 (0 of 3 decisions picked at random)" in first.out
    assert "paper, history cap 7" in carded.out and "(a guess" not in carded.out


# --- expected grades from logprobs ---------------------------------------------------------------


def distribution(code: str) -> dict[str, float]:
    """A model sure of grades 5 and 6 and torn about 7-9 (greedy 7-9, but likelier low than high)."""
    greedy = 5 + sum(map(int, code)) % 5
    if greedy >= 7:
        return {str(greedy): 0.4, "0": 0.35, " 1": 0.25}  # " 1": a digit token with a space counts too
    return {str(greedy): 0.9, str(greedy - 1): 0.1}


def expected(code: str) -> float:
    return sum(int(token) * p for token, p in distribution(code).items())


def unsure_model(request: dict, candidates: list[str]) -> tuple[int, str, float, dict[str, float]]:
    [code] = candidates
    alternatives = distribution(code)
    return 200, max(alternatives, key=alternatives.__getitem__), 0.0, alternatives


def test_logprobs_grade_by_expected_grade_and_the_audit_says_so(tmp_path: Path) -> None:
    with FakeOpenAI(unsure_model) as server:
        search = Search(tmp_path / "runs.db")
        search.start(llm_config(server.base_url, 12, prompt_format="grade"), run_id="r")
    assert all(r["logprobs"] is True and r["top_logprobs"] == 10 for r in server.requests)
    asked = search.store.decisions("r")[2:]  # the first two have no scale to grade on: no request
    greedy_would_differ = 0
    for row in asked:
        pool, [chosen] = json.loads(row["pool"]), json.loads(row["chosen"])
        assert expected(chosen) == pytest.approx(max(map(expected, pool))) and row["fallback"] == 0
        greedy = [int(max(distribution(code), key=distribution(code).__getitem__)) for code in pool]
        greedy_would_differ += greedy[pool.index(chosen)] != max(greedy)
        answers = row["raw_answer"].split("\n---\n")
        assert len(answers) == 10 and all("from logprobs" in answer for answer in answers)
        first = answers[0]
        assert first.startswith(max(distribution(pool[0]), key=distribution(pool[0]).__getitem__))
        assert f"(expected grade {expected(pool[0]):.2f} from logprobs)" in first
    assert greedy_would_differ >= 3, "the constructed case must be one where expected grades change the pick"


def test_without_logprobs_the_greedy_digit_decides(tmp_path: Path) -> None:
    """``transformers serve`` ignores the request for logprobs: the answers and picks are the greedy ones."""
    with FakeOpenAI(by_digit_sum) as server:
        search = Search(tmp_path / "runs.db")
        search.start(llm_config(server.base_url, 5, prompt_format="grade"), run_id="r")
    for row in search.store.decisions("r")[2:]:
        pool, [chosen] = json.loads(row["pool"]), json.loads(row["chosen"])
        assert digit_sum_grade(chosen) == max(map(digit_sum_grade, pool))
        assert row["raw_answer"].split("\n---\n") == [str(digit_sum_grade(code)) for code in pool]


def test_a_server_refusing_logprobs_is_asked_again_without_them_for_the_rest_of_the_run(tmp_path: Path) -> None:
    def no_logprobs(request: dict, candidates: list[str]) -> tuple[int, str, float]:
        if "logprobs" in request:
            return 400, "logprobs are not supported", 0.0
        return by_digit_sum(request, candidates)

    with FakeOpenAI(no_logprobs) as server:
        search = Search(tmp_path / "runs.db")
        config = llm_config(server.base_url, 5, prompt_format="grade", parallel_requests=1)
        search.start(config, run_id="r")
    asking = ["logprobs" in request for request in server.requests]
    assert asking[0] and not any(asking[1:]), "one refusal, then never asked again"
    assert len(server.requests) == 1 + 3 * 10
    for row in search.store.decisions("r")[2:]:
        pool, [chosen] = json.loads(row["pool"]), json.loads(row["chosen"])
        assert digit_sum_grade(chosen) == max(map(digit_sum_grade, pool)) and row["fallback"] == 0


# --- the fallback guard --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "stopped_after", "seen"),
    [
        ((), 4, "no usable answer in 5 decisions in a row"),
        (("--fallback-limit", "0"), 9, "no usable answer in 10 of 10 decisions"),
    ],
    ids=["in-a-row", "share"],
)
def test_decisions_that_keep_falling_back_stop_the_run_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, flags: tuple[str, ...], stopped_after: int, seen: str
) -> None:
    db = tmp_path / "runs.db"
    with FakeOpenAI(always_one) as server:
        assert main(search_argv(server, db, 30, *flags)) == 2
    err = capsys.readouterr().err
    assert seen in err and "--model-card" in err and "--history-cap" in err and "start a new run" in err
    assert "once the ranker works again" not in err
    [(status, error)] = stored(db, "SELECT status, error FROM runs")
    assert status == "stopped" and error.startswith("RankerMisconfigured: ")
    assert stored(db, "SELECT COUNT(*) FROM evaluations") == [(stopped_after,)], "what was evaluated is saved"
    assert stored(db, "SELECT COUNT(*), SUM(fallback) FROM decisions") == [(stopped_after, stopped_after)]


def test_the_guard_can_be_turned_off_and_the_summary_shows_the_fallback_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with FakeOpenAI(always_one) as server:
        argv = search_argv(server, tmp_path / "runs.db", 12, "--fallback-limit", "0", "--fallback-share", "0")
        assert main(argv) == 0
    assert "1.000 (12 of 12 decisions picked at random)" in capsys.readouterr().out


def test_bad_guard_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RankerSetupError, match="--fallback-share in \\[0, 1\\]"):
        Search(tmp_path / "runs.db").start(llm_config("http://127.0.0.1:9/v1", 3, fallback_share=1.5))


# --- HTTP errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "fix"),
    [
        (
            400,
            "This model's maximum context length is 2048 tokens. However, you requested 4100 tokens.",
            "--history-cap",
        ),
        (404, "The model `scripted` does not exist.", "pass --model as the server names it"),
        (401, "Invalid API key", "LMSEARCHER_API_KEY"),
    ],
)
def test_4xx_is_a_configuration_error_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, status: int, message: str, fix: str
) -> None:
    db = tmp_path / "runs.db"
    with FakeOpenAI(lambda request, candidates: (status, message, 0.0)) as server:
        assert main(search_argv(server, db, 5)) == 2
    assert len(server.requests) == 1, "never retried"
    err = " ".join(capsys.readouterr().err.split())  # rich may wrap the line
    assert f"refused the request (HTTP {status}: {message})" in err and fix in err
    assert "once the ranker works again" not in err
    assert stored(db, "SELECT status FROM runs") == [("stopped",)]


def test_a_persisting_503_still_stops_the_run_resumably_with_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    db = tmp_path / "runs.db"
    with FakeOpenAI(lambda request, candidates: (503, "overloaded", 0.0)) as server:
        assert main(search_argv(server, db, 5, "--llm-retries", "1")) == 3
    assert len(server.requests) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "failed 2 times in a row (last: HTTP 503)" in err and "once the ranker works again" in err
    assert "--resume r" in err


def test_collm_errors_name_the_navigator_not_the_ranker() -> None:
    with FakeOpenAI(first_candidate) as server:
        dead_url = server.base_url
    with pytest.raises(RankerSetupError) as raised:
        make_collm_agents({}, {"base_url": dead_url, "model": "m"})
    message = str(raised.value)
    assert "cannot reach the navigator" in message and "--navigator-base-url" in message
    assert "the ranker" not in message and "Serving a ranker" not in message
