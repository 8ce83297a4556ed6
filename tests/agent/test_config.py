"""SearchConfig's rule that a new run reads every option set away from its default."""

from __future__ import annotations

import sqlite3

import pytest

from agent.cli.main import main
from agent.config import ConfigError, SearchConfig, is_llm_ranker
from agent.driver import Search

IGNORED = [
    ({"gp_every": 3}, "--gp-every 3 applies to --proposer portfolio (this run's pool: mixed)"),
    ({"ranker": "random", "population": 50}, "--population 50 applies to regularized evolution"),
    ({"ranker": "nearest", "sample_size": 5}, "--sample-size 5 applies to regularized evolution"),
    ({"ranker": "evolution", "random_fraction": 0.3}, "--random-fraction 0.3 applies to a mixed pool"),
    ({"ranker": "nearest", "temperature": 0.7}, "--temperature 0.7 applies to an LLM ranker"),
    (
        {"ranker": "additive", "history_cap": 48},
        "--history-cap 48 applies to an LLM ranker (inprocess, local, vllm, llm, openai:MODEL) or --ranker nearest",
    ),
    ({"ranker": "tests.agent.rankers:Smallest", "fallback_limit": 0}, "--fallback-limit 0 applies to an LLM ranker"),
    ({"ranker": "inprocess", "vllm_python": "/venv/bin/python"}, "applies to --ranker vllm[:PATH]"),
    ({"collm_batch": 5}, "--collm-batch 5 applies to --strategy collm"),
    ({"task": "table", "known_before": ["params"]}, "--known-before ['params'] applies to a run with a --constraint"),
    ({"strategy": "collm", "pool_size": 20}, "--pool-size 20 applies to --strategy lmsearcher"),
    ({"strategy": "collm", "max_reasks": 1}, "--max-reasks 1 applies to an LLM ranker"),
    ({"ranker": "tpe", "random_start": 10}, "--random-start 10 applies to a ranker that picks from a pool"),
    ({"ranker": "random", "random_start": 10}, "--random-start 10 applies to a ranker that picks from a pool"),
]

READ = [
    {},
    {"proposer": "portfolio", "gp_every": 3},
    {"ranker": "evolution", "population": 50, "sample_size": 5},
    {"proposer": "mixed-gp", "random_fraction": 0.3},
    {"ranker": "nearest-mean", "history_cap": 48},
    {"ranker": "inprocess", "fallback_limit": 0, "history_cap": 12},
    {"ranker": "vllm", "vllm_python": "/venv/bin/python"},
    {"ranker": "additive", "random_start": 10},
    {"ranker": "tests.agent.rankers:Smallest", "random_start": 3},
    {"ranker": "openai:gpt-4o", "temperature": 0.7},
    {"strategy": "collm", "model": "m", "base_url": "http://127.0.0.1:9/v1", "timeout_s": 5.0, "collm_batch": 5},
]


@pytest.mark.parametrize(("options", "message"), IGNORED)
def test_an_option_this_run_would_not_read_is_named_with_what_reads_it(options, message):
    (ignored,) = SearchConfig(**options).ignored_options()
    assert message in ignored


@pytest.mark.parametrize("options", READ)
def test_options_the_run_reads_are_not_reported(options):
    assert SearchConfig(**options).ignored_options() == []


def test_a_new_run_with_an_ignored_option_is_refused_before_anything_is_stored(tmp_path):
    search = Search(tmp_path / "runs.db")
    try:
        with pytest.raises(ConfigError, match=r"--gp-every 3 applies to --proposer portfolio.*drop it"):
            search.start(SearchConfig(ranker="random", proposer="mixed", gp_every=3, budget=2))
    finally:
        search.close()
    with sqlite3.connect(tmp_path / "runs.db") as connection:
        assert connection.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)


def test_the_command_line_says_which_option_is_ignored(tmp_path, capsys):
    code = main(["--ranker", "nearest", "--temperature", "0.7", "--budget", "2", "--db", str(tmp_path / "r.db")])
    assert code != 0
    assert "--temperature 0.7 applies to an LLM ranker" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "llm"),
    [("inprocess", True), ("local:models/x", True), ("vllm", True), ("llm", True), ("openai:gpt-4o", True),
     ("openai", False), ("local-search", False), ("nearest", False), ("my_rankers:Mine", False)],
)  # fmt: skip
def test_llm_ranker_specs_are_told_from_baselines_and_users_rankers(spec, llm):
    assert is_llm_ranker(spec) is llm


def test_collm_is_told_the_numeric_constraints_beside_its_words():
    config = SearchConfig(strategy="collm", constraints="mobile-sized", constraint=["params<=5e6", "flops<6e8"])
    assert config.collm_options()["constraints"] == (
        "mobile-sized; params<=5e6 (a hard limit: a result that breaks it is infeasible); "
        "flops<6e8 (a hard limit: a result that breaks it is infeasible)"
    )
    assert SearchConfig(strategy="collm").collm_options()["constraints"] is None
