"""``python main.py bench`` on the real NAS-Bench-201 tables, small enough for CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli.bench import main as bench_main
from agent.cli.common import UsageError
from agent.cli.main import main as cli_main


def test_bench_writes_table_plot_and_runs(tmp_path: Path, nb201_dir: Path) -> None:
    out = tmp_path / "bench"
    argv = ["--methods", "rs", "re", "--datasets", "cifar10", "--seeds", "2", "--budget", "15"]
    assert bench_main([*argv, "--data", str(nb201_dir), "--out", str(out)]) == 0
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert {(r["method"], r["seed"]) for r in runs} == {("rs", 0), ("rs", 1), ("re", 0), ("re", 1)}
    for run in runs:
        assert len(run["trajectory"]) == 15
        assert run["trajectory"][-1] == run["best_val"] == max(v for v in run["trajectory"] if v is not None)
        assert 80 < run["test_of_best"] < 95
    table = out.with_suffix(".md").read_text()
    assert "| rs |" in table and "| re |" in table and "cifar10 val" in table
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_reuse_takes_earlier_runs_and_runs_only_the_rest(tmp_path: Path, nb201_dir: Path) -> None:
    common = ["--datasets", "cifar10", "--seeds", "2", "--budget", "10", "--data", str(nb201_dir)]
    assert bench_main(["--methods", "rs", *common, "--out", str(tmp_path / "first")]) == 0
    first = json.loads((tmp_path / "first.json").read_text())["runs"]
    # LLM runs made elsewhere (here: the random-search runs, relabelled): reusing them needs no server,
    # so a model folder that does not exist is never opened.
    relabelled = [{**run, "method": "llm-random-pool"} for run in first]
    (tmp_path / "llm.json").write_text(json.dumps({"args": {"budget": 10}, "runs": relabelled}))
    argv = ["--methods", "rs", "re", "llm-random-pool", *common, "--model", str(tmp_path / "no-model")]
    reuse = ["--reuse", str(tmp_path / "first.json"), str(tmp_path / "llm.json")]
    assert bench_main([*argv, *reuse, "--out", str(tmp_path / "all")]) == 0
    runs = json.loads((tmp_path / "all.json").read_text())["runs"]
    assert [r for r in runs if r["method"] == "rs"] == first  # the same records, seconds included: not rerun
    assert [r for r in runs if r["method"] == "llm-random-pool"] == relabelled
    assert len([r for r in runs if r["method"] == "re"]) == 2
    assert "| re |" in (tmp_path / "all.md").read_text()


def test_reuse_refuses_another_budget_or_a_file_that_is_not_a_bench_output(
    tmp_path: Path, nb201_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--methods", "rs", "--datasets", "cifar10", "--seeds", "1", "--data", str(nb201_dir)]
    assert bench_main([*common, "--budget", "10", "--out", str(tmp_path / "first")]) == 0
    with pytest.raises(UsageError, match="budget 10, not 12; pass --budget 10"):
        bench_main([*common, "--budget", "12", "--reuse", str(tmp_path / "first.json")])
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="not a bench output"):
        bench_main([*common, "--budget", "10", "--reuse", str(tmp_path / "other.json")])
    # Through main.py: the message, and the bad-input exit code, not a stack trace.
    assert cli_main(["bench", *common, "--budget", "10", "--reuse", str(tmp_path / "other.json")]) == 2
    assert "error:" in capsys.readouterr().err


def test_bench_llm_methods_share_one_served_model(tmp_path: Path, nb201_dir: Path, tiny_model_dir: Path) -> None:
    """A real ``transformers serve`` of the session's tiny model; its answers may fall back to random picks."""
    out = tmp_path / "bench"
    argv = ["--methods", "llm-random-pool", "random-mixed-pool", "--datasets", "cifar100", "--seeds", "1"]
    assert bench_main([*argv, "--budget", "12", "--data", str(nb201_dir), "--model", str(tiny_model_dir),
                       "--out", str(out)]) == 0  # fmt: skip
    runs = {r["method"]: r for r in json.loads(out.with_suffix(".json").read_text())["runs"]}
    assert set(runs) == {"llm-random-pool", "random-mixed-pool"}
    assert 0.0 <= runs["llm-random-pool"]["fallback_rate"] <= 1.0, "the LLM was asked for every decision"
    assert runs["random-mixed-pool"]["fallback_rate"] is None and len(runs["llm-random-pool"]["trajectory"]) == 12
    assert "| llm-random-pool |" in out.with_suffix(".md").read_text()
