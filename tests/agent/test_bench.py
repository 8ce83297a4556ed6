"""``python main.py bench`` on the real NAS-Bench-201 tables, small enough for CI."""

from __future__ import annotations

import json
from pathlib import Path

from agent.bench import main as bench_main


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
