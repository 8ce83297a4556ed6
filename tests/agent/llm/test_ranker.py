"""The LLM ranker over real HTTP: a scripted OpenAI-compatible server for faults, and a real
``transformers serve`` of a tiny locally trained model for the end-to-end path."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.driver import Search, SearchConfig
from agent.llm.local_server import LocalServer
from agent.llm.ranker import RankerSetupError, RankerUnavailable, make_llm_ranker, parse_choice
from prompts.choice import untag
from prompts.grade import unscored
from tests.fake_openai import FakeOpenAI
from tests.processes import process_gone
from tools.ncode import SearchSpace, Slot

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("12345", "12345"),
        ("  '12345'\n", "12345"),
        ('"12345".', "12345"),
        ("The best candidate is 12345 because it is deep.", "12345"),
        ("`54321`", "54321"),
        ("99999", None),  # not offered
        ("12345 or 54321", None),  # two candidates: ambiguous
        ("", None),
        ("123456", None),  # a longer string is not a candidate
    ],
)
def test_parse_choice(answer: str, expected: str | None) -> None:
    assert parse_choice(answer, ["12345", "54321", "11111"]) == expected


def llm_config(base_url: str, budget: int = 5, batch: int = 1, **options: object) -> SearchConfig:
    settings = {"base_url": base_url, "model": "scripted", "timeout_s": 5.0, "llm_backoff_s": 0.01, **options}
    return SearchConfig(ranker="llm", budget=budget, batch=batch, seed=1, **settings)


def decisions(search: Search, run_id: str) -> list[dict]:
    return search.store.decisions(run_id)


def first_candidate(request: dict, candidates: list[str]) -> tuple[int, str, float]:
    return 200, f"I would pick '{candidates[0]}'.", 0.0


def test_answers_become_audited_decisions(tmp_path: Path) -> None:
    with FakeOpenAI(first_candidate) as server:
        search = Search(tmp_path / "runs.db")
        result = search.start(llm_config(server.base_url), run_id="r")
    assert result.evaluations == 5
    rows = decisions(search, "r")
    assert len(rows) == 5
    for row in rows:
        pool, chosen = json.loads(row["pool"]), json.loads(row["chosen"])
        assert chosen == [pool[0]]
        assert row["fallback"] == 0 and row["retries"] == 0
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] == 3 and row["latency_s"] > 0
        assert chosen[0] in row["raw_answer"]
    # The history grows in the prompt, best first, and candidates are the pool.
    last_prompt = server.requests[-1]["messages"][0]["content"]
    assert server.requests[-1]["messages"][0]["role"] == "system"
    items = re.findall(r"([0-9]{5})\|([01]\.[0-9]{4}),", last_prompt)
    assert len(items) == 4 and items[0][1] == "1.0000" and items[-1][1] == "0.0000"


def test_no_candidate_named_reasks_with_fresh_pools_then_falls_back(tmp_path: Path) -> None:
    with FakeOpenAI(lambda request, candidates: (200, "I am not sure.", 0.0)) as server:
        search = Search(tmp_path / "runs.db")
        result = search.start(llm_config(server.base_url, budget=3, max_reasks=3), run_id="r")
    assert result.evaluations == 3
    assert len(server.requests) == 3 * 4, "each decision: one question and three re-asks, never more"
    first_pools = [tuple(sorted(json.dumps(r["messages"]) for r in server.requests[:1]))]
    assert first_pools  # the re-asks below must show other candidates
    from tests.fake_openai import candidates_of

    asked = [tuple(candidates_of(request)) for request in server.requests[:4]]
    assert len(set(asked)) == 4, "every re-ask offers a fresh pool"
    for row in decisions(search, "r"):
        assert row["fallback"] == 1 and row["retries"] == 3
        assert json.loads(row["chosen"])[0] in json.loads(row["pool"])


def test_batch_asks_k_times_without_replacement(tmp_path: Path) -> None:
    with FakeOpenAI(first_candidate) as server:
        search = Search(tmp_path / "runs.db")
        result = search.start(llm_config(server.base_url, budget=6, batch=3), run_id="r")
    assert result.evaluations == 6
    rows = decisions(search, "r")
    assert len(rows) == 2 and len(server.requests) == 6
    from tests.fake_openai import candidates_of

    first_step = [candidates_of(request) for request in server.requests[:3]]
    assert [len(pool) for pool in first_step] == [10, 9, 8]
    chosen = json.loads(rows[0]["chosen"])
    assert chosen == [pool[0] for pool in first_step] and len(set(chosen)) == 3


def test_transient_errors_are_retried_and_audited(tmp_path: Path) -> None:
    replies = iter([(503, "overloaded", 0.0), (429, "slow down", 0.0), (408, "request timeout", 0.0)])

    def flaky(request: dict, candidates: list[str]) -> tuple[int, str, float]:
        return next(replies, (200, candidates[0], 0.0))

    with FakeOpenAI(flaky) as server:
        search = Search(tmp_path / "runs.db")
        search.start(llm_config(server.base_url, budget=2, llm_retries=3), run_id="r")
    first = decisions(search, "r")[0]
    assert first["fallback"] == 0 and first["error"] == "3 transient error(s) retried"


def test_slow_server_stops_the_run_cleanly_and_resume_finishes_it(tmp_path: Path) -> None:
    calls = {"n": 0}

    def slow_after_two(request: dict, candidates: list[str]) -> tuple[int, str, float]:
        calls["n"] += 1
        return 200, candidates[0], 0.0 if calls["n"] <= 2 else 1.5

    db = tmp_path / "runs.db"
    with FakeOpenAI(slow_after_two) as server:
        port = server.server.server_address[1]
        search = Search(db)
        with pytest.raises(RankerUnavailable, match="failed 2 times"):
            search.start(llm_config(server.base_url, budget=6, timeout_s=0.5, llm_retries=1), run_id="r")
        run = search.store.get_run("r")
        assert run["status"] == "stopped" and "RankerUnavailable" in run["error"]
        assert search.store.count_evaluations("r") == 2
        search.close()
    with FakeOpenAI(first_candidate, port=port):
        search = Search(db)
        result = search.resume("r")
    assert result.evaluations == 6
    codes = [o.ncode for _, o in search.store.observations("r")]
    assert len(set(codes)) == 6


def test_unreachable_server_fails_before_any_run_exists(tmp_path: Path) -> None:
    with FakeOpenAI(first_candidate) as server:
        dead_url = server.base_url
    search = Search(tmp_path / "runs.db")
    with pytest.raises(RankerSetupError, match="cannot reach the ranker"):
        search.start(llm_config(dead_url), run_id="r")
    assert search.store.list_runs() == []


def test_api_key_is_sent_but_never_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-SECRET-9f8e7d"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    with FakeOpenAI(first_candidate) as server:
        search = Search(tmp_path / "runs.db")
        search.start(llm_config(server.base_url, budget=3), run_id="r")
        search.close()
    assert server.headers[0]["authorization"] == f"Bearer {secret}"
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), f"the key leaked into {path.name}"


def test_paper_prompt_format(tmp_path: Path) -> None:
    with FakeOpenAI(first_candidate) as server:
        search = Search(tmp_path / "runs.db")
        search.start(llm_config(server.base_url, budget=3, prompt_format="paper"), run_id="r")
    prompt = server.requests[-1]["messages"][0]
    assert prompt["role"] == "user"
    assert prompt["content"].startswith(
        "Please analyze the history, rank the candidate and output the highest-performing candidate."
    )
    assert prompt["content"].count("NCode: ") == 2 and "\nCandidate:\n" in prompt["content"]


def test_choice_format_picks_the_highest_predicted_score(tmp_path: Path) -> None:
    with FakeOpenAI(lambda request, candidates: (200, "A1B2C9D0", 0.0)) as server:
        search = Search(tmp_path / "runs.db")
        search.start(llm_config(server.base_url, budget=4, prompt_format="choice"), run_id="r")
    prompt = server.requests[-1]["messages"][0]["content"]
    written = re.search(r"Candidates, as code=label: ((?:[^;=\s]{5}=[A-Z];){10}) ", prompt)
    assert written and all(len(untag(code)) == 5 for code in re.findall(r"([^;=]+)=", written.group(1)))
    for row in decisions(search, "r"):
        assert json.loads(row["chosen"]) == [json.loads(row["pool"])[2]] and row["fallback"] == 0


def test_choice_format_refuses_pools_larger_than_its_labels(tmp_path: Path) -> None:
    with FakeOpenAI(first_candidate) as server:  # reachable: its key and endpoint are checked first
        config = llm_config(server.base_url, prompt_format="choice")
        config.pool_size = 27
        with pytest.raises(RankerSetupError, match="at most 26 candidates; use --pool-size 26"):
            Search(tmp_path / "runs.db").start(config)
        assert not server.requests  # refused before any question


def test_near_format_ranks_any_space_but_writes_codes_only_where_they_fit() -> None:
    """A near ranking prompt shows distances, not codes, so any space will do; its generation prompt
    writes codes as tagged characters, which cover at most 64 slots of 16 options."""
    wide = SearchSpace("wide", tuple(Slot(f"s{i}", tuple(range(20))) for i in range(70)))
    options = {"base_url": None, "model": "scripted", "prompt_format": "near", "timeout_s": 5.0}
    with FakeOpenAI(first_candidate) as server:
        options["base_url"] = server.base_url
        make_llm_ranker("llm", options, wide).close()
        with pytest.raises(RankerSetupError, match="at most 64 slots of at most 16 options"):
            make_llm_ranker("llm", options, wide, generates=True)


def test_grade_format_asks_once_per_candidate_and_picks_the_highest_grade(tmp_path: Path) -> None:
    """The scripted server grades a code by its digit sum: the pick must be the pool's highest."""

    def by_digit_sum(request: dict, candidates: list[str]) -> tuple[int, str, float]:
        [code] = candidates
        return 200, str(min(9, sum(int(symbol) for symbol in code) // 2)), 0.0

    with FakeOpenAI(by_digit_sum) as server:
        search = Search(tmp_path / "runs.db")
        search.start(llm_config(server.base_url, budget=4, prompt_format="grade", history_cap=6), run_id="r")
    asked = [request["messages"][0]["content"] for request in server.requests]
    assert len(asked) == 10 * 2  # decisions 3 and 4 of ten candidates, one question each
    history = unscored(asked[-1].split(" Code: ")[0])
    assert len(history) == 3 and all(len(code) == 5 for code, _ in history)
    first, second, *graded = decisions(search, "r")
    for row in (first, second):  # fewer than two scored codes: no scale to grade on, a random pick
        assert (
            row["raw_answer"] is None
            and row["prompt_tokens"] is None
            and json.loads(row["chosen"])[0] in json.loads(row["pool"])
        )
    for row in graded:
        pool, [chosen] = json.loads(row["pool"]), json.loads(row["chosen"])
        grades = [min(9, sum(map(int, code)) // 2) for code in pool]
        assert grades[pool.index(chosen)] == max(grades) and row["fallback"] == 0
        assert len(row["raw_answer"].split("\n---\n")) == 10


def test_per_candidate_questions_go_out_together_and_decide_as_one_at_a_time(tmp_path: Path) -> None:
    """With ``parallel_requests`` the ten questions of a decision overlap at the server; the answers are
    read in the candidates' order, so the run is the run that one-at-a-time asking gives."""
    in_flight, most, lock = [0], {}, threading.Lock()  # the server answers each request on its own thread

    def slow_digit_sum(request: dict, candidates: list[str]) -> tuple[int, str, float]:
        with lock:
            in_flight[0] += 1
            most[parallel] = max(most.get(parallel, 0), in_flight[0])
        time.sleep(0.05)  # long enough for the other questions of the decision to arrive
        with lock:
            in_flight[0] -= 1
        [code] = candidates
        return 200, str(min(9, sum(int(symbol) for symbol in code) // 2)), 0.0

    runs = {}
    for parallel in (1, 10):
        with FakeOpenAI(slow_digit_sum) as server:
            search = Search(tmp_path / f"runs{parallel}.db")
            config = llm_config(server.base_url, budget=4, prompt_format="grade", parallel_requests=parallel)
            search.start(config, run_id="r")
        runs[parallel] = [(row["pool"], row["chosen"], row["raw_answer"]) for row in decisions(search, "r")]
    assert most[1] == 1 and most[10] > 1
    assert runs[10] == runs[1]


# --- a real transformers serve of a tiny model trained by the test session -----------------------


def run_main(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "main.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, **kwargs)


def serve_processes(model_dir: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"serve {model_dir}"], capture_output=True, text=True)
    return found.stdout.split()


def decisions_of_search(tmp_path: Path, ranker: str | None, budget: int, columns: str) -> list[tuple]:
    """Run ``main.py --ranker RANKER`` (None: the default ranker) to the end; the ``columns`` of its decisions."""
    db = tmp_path / "runs.db"
    chosen = ("--ranker", ranker) if ranker else ()
    done = run_main(*chosen, "--budget", str(budget), "--db", str(db), "--run-id", "r", "--quiet")
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as connection:
        return connection.execute(f"SELECT {columns} FROM decisions ORDER BY iteration").fetchall()


def test_local_model_ranks_a_search_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:
    columns = "pool, chosen, raw_answer, prompt_tokens, completion_tokens, latency_s"
    rows = decisions_of_search(tmp_path, f"local:{tiny_model_dir}", 4, columns)
    assert len(rows) == 4
    for pool, chosen, _answer, prompt_tokens, completion_tokens, latency_s in rows:
        assert json.loads(chosen)[0] in json.loads(pool)
        assert prompt_tokens > 100 and completion_tokens >= 1 and latency_s > 0
    assert any(any(ch.isdigit() for ch in row[2]) for row in rows), "the tiny model should answer with digits"
    assert serve_processes(tiny_model_dir) == [], "the managed server outlived the search"


def test_local_grade_model_is_asked_once_per_candidate_end_to_end(tmp_path: Path, grade_model_dir: Path) -> None:
    """The shipped model's format through a real ``transformers serve``: its card sets the format."""
    rows = decisions_of_search(tmp_path, f"local:{grade_model_dir}", 4, "pool, chosen, raw_answer, fallback")[2:]
    assert len(rows) == 2  # the first two decisions have no scale to grade on (a random pick, no request)
    for pool, chosen, answers, _ in rows:
        assert json.loads(chosen)[0] in json.loads(pool)
        assert len(answers.split("\n---\n")) == len(json.loads(pool)) == 10  # one question per candidate
    assert all(fallback == 0 for *_, fallback in rows), "every answer should hold a grade"


def test_shipped_lm_searcher_tiny_is_the_default_ranker(tmp_path: Path) -> None:
    """models/lm-searcher-tiny: a LLaMA in Hugging Face format under 30 MB, trained never on NAS-Bench-201,
    in the near format, answering every question with a grade as the default ranker (``--ranker inprocess``),
    each graded by its expected grade."""
    folder = ROOT / "models" / "lm-searcher-tiny"
    assert (folder / "model.safetensors").stat().st_size < 30 * 2**20
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["head_dim"] >= 32
    card = json.loads((folder / "lmsearcher.json").read_text())
    assert card["prompt_format"] == "near" and card["pruning"] is True
    stages = []  # the card, then the cards of the models it continued from (--init)
    while card:
        stages, card = [*stages, card], card.get("previous")
    domains = [d for stage in stages for d in stage["trained_on"] + (stage["warmup"] or {}).get("domains", [])]
    assert domains and not any("201" in domain for domain in domains)
    rows = decisions_of_search(tmp_path, None, 4, "raw_answer, fallback")[2:]  # the default ranker is this model
    assert len(rows) == 2 and all(fallback == 0 for _, fallback in rows)
    answer_shape = r"[0-9] \(expected grade [0-9]\.[0-9]{2} from logprobs\)"
    assert all(re.fullmatch(answer_shape, answer) for row in rows for answer in row[0].split("\n---\n"))


def test_server_killed_mid_run_then_resumed(tmp_path: Path, tiny_model_dir: Path) -> None:
    db = tmp_path / "runs.db"
    server = LocalServer(tiny_model_dir).start()
    flags = ("--base-url", server.base_url, "--model", str(server.model_path), "--llm-retries", "1",
             "--fallback-limit", "0", "--fallback-share", "0")  # fmt: skip  # a model this small often falls back
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--ranker", "llm", *flags, "--budget", "8", "--db", str(db),
         "--run-id", "k", "--simulated-cost", "0.5", "--quiet"],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with sqlite3.connect(db) as connection:
                try:
                    if connection.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] >= 2:
                        break
                except sqlite3.OperationalError:
                    pass
            time.sleep(0.1)
        server.stop()
        assert process.wait(timeout=120) == 3
        assert "--resume k" in process.stderr.read()
    finally:
        server.stop()
        process.kill()
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT status FROM runs").fetchone() == ("stopped",)
        before = connection.execute("SELECT ncode FROM evaluations ORDER BY id").fetchall()
    assert 2 <= len(before) < 8
    with LocalServer(tiny_model_dir, port=server.port):
        resumed = run_main("--resume", "k", "--db", str(db), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    with sqlite3.connect(db) as connection:
        after = connection.execute("SELECT ncode FROM evaluations ORDER BY id").fetchall()
    assert len(after) == 8 and len(set(after)) == 8 and after[: len(before)] == before
    shown = run_main("show", "k", "--db", str(db))
    assert "fallback rate" in shown.stdout and "median latency s" in shown.stdout


def test_managed_server_dies_with_a_killed_search(tiny_model_dir: Path) -> None:
    """SIGKILL leaves no chance to clean up: the kernel's parent-death signal stops the server."""
    script = (
        "import sys, time\n"
        "from agent.llm.local_server import LocalServer\n"
        "server = LocalServer(sys.argv[1]).start()\n"
        "print(server.process.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tiny_model_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    server_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not process_gone(server_pid):
        time.sleep(0.2)
    assert process_gone(server_pid), "the server outlived its search"
