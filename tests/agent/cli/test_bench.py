"""``python main.py bench`` on the real NAS-Bench-201 tables and on results tables the tests write; CI-sized."""

from __future__ import annotations

import itertools
import json
import sqlite3
import statistics
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
        assert run["trajectory"][-1] == run["best"] == max(v for v in run["trajectory"] if v is not None)
        assert 80 < run["final_metrics"]["test_acc"] < 95
    table = out.with_suffix(".md").read_text()
    assert "| rs |" in table and "| re |" in table
    assert "cifar10 best val_acc | cifar10 test_acc of best" in table  # NB201's columns: val, and test of that arch
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_reuse_takes_earlier_runs_and_runs_only_the_rest(tmp_path: Path, nb201_dir: Path) -> None:
    common = ["--datasets", "cifar10", "--seeds", "2", "--budget", "10", "--data", str(nb201_dir)]
    assert bench_main(["--methods", "rs", *common, "--out", str(tmp_path / "first")]) == 0
    first = json.loads((tmp_path / "first.json").read_text())["runs"]
    # LLM runs made elsewhere (here: the random-search runs, relabelled, in the keys of bench files written
    # before bench took any task): reusing them needs no server, so a model folder that does not exist is
    # never opened.
    relabelled = [{**run, "method": "llm-random-pool"} for run in first]
    old_keys = [
        {**{k: v for k, v in run.items() if k not in ("best", "final_metrics")},
         "best_val": run["best"], "test_of_best": run["final_metrics"]["test_acc"]}
        for run in relabelled
    ]  # fmt: skip
    (tmp_path / "llm.json").write_text(json.dumps({"args": {"budget": 10}, "runs": old_keys}))
    argv = ["--methods", "rs", "re", "llm-random-pool", *common, "--model", str(tmp_path / "no-model")]
    reuse = ["--reuse", str(tmp_path / "first.json"), str(tmp_path / "llm.json")]
    assert bench_main([*argv, *reuse, "--out", str(tmp_path / "all")]) == 0
    runs = json.loads((tmp_path / "all.json").read_text())["runs"]
    assert [r for r in runs if r["method"] == "rs"] == first  # the same records, seconds included: not rerun
    reused = [r for r in runs if r["method"] == "llm-random-pool"]
    assert [(r["seed"], r["best"], r["final_metrics"]) for r in reused] == [
        (r["seed"], r["best"], {"test_acc": r["final_metrics"]["test_acc"]}) for r in relabelled
    ]
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


def write_table(folder: Path) -> list[str]:
    """A complete results table: 5 slots x 3 options = 243 rows, an additive score plus a small interaction
    of the first two slots; ``test_acc`` plays NB201's test accuracy. Returns the bench's task flags."""
    weights = [[0.0, 0.3, 0.1], [0.2, 0.0, 0.4], [0.1, 0.5, 0.0], [0.3, 0.1, 0.2], [0.0, 0.2, 0.6]]
    options = ("a", "b", "c")
    (folder / "space.yaml").write_text(
        "name: toy\nslots:\n" + "".join(f"  - {{name: s{i}, options: [a, b, c]}}\n" for i in range(5))
    )
    lines = ["s0,s1,s2,s3,s4,acc,test_acc"]
    for combo in itertools.product(range(3), repeat=5):
        acc = 50 + 10 * sum(weights[slot][option] for slot, option in enumerate(combo)) + (combo[0] == combo[1])
        lines.append(",".join(options[o] for o in combo) + f",{acc:.3f},{acc - 0.5:.3f}")
    (folder / "results.csv").write_text("\n".join(lines) + "\n")
    return ["--task", "table", "--space", str(folder / "space.yaml"), "--data", str(folder / "results.csv")]


def bench_runs(out: Path) -> list[dict]:
    return json.loads(out.with_suffix(".json").read_text())["runs"]


def test_bench_on_a_results_table_with_baselines_and_an_llm(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Any task: a YAML space plus a CSV; the tiny random LLM's picks may be poor, every run still spends its budget."""
    out = tmp_path / "bench"
    methods = ["rs", "re", "tpe", "llm-mixed-pool"]
    argv = [*write_table(tmp_path), "--metric", "acc", "--methods", *methods, "--seeds", "3", "--budget", "8"]
    assert bench_main([*argv, "--model", str(tiny_model_dir), "--out", str(out)]) == 0
    runs = bench_runs(out)
    assert sorted((r["method"], r["seed"]) for r in runs) == sorted((m, s) for m in methods for s in range(3))
    for run in runs:
        assert run["dataset"] is None and len(run["trajectory"]) == 8
        assert run["trajectory"][-1] == run["best"] == max(run["trajectory"])
        assert float(run["final_metrics"]["test_acc"]) == pytest.approx(run["best"] - 0.5)
    assert all(0.0 <= r["fallback_rate"] <= 1.0 for r in runs if r["method"] == "llm-mixed-pool")
    table = out.with_suffix(".md").read_text()
    assert "toy best acc | toy test_acc of best" in table and "higher is better" in table
    assert all(f"| {method} |" in table for method in methods)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_tpe_models_a_results_table_and_beats_random_search(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    argv = [*write_table(tmp_path), "--metric", "acc", "--methods", "rs", "tpe", "--seeds", "8", "--budget", "40"]
    assert bench_main([*argv, "--out", str(out)]) == 0
    runs = bench_runs(out)
    by_method = {m: sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"]) for m in ("rs", "tpe")}
    assert all(a["trajectory"] != b["trajectory"] for a, b in zip(by_method["rs"], by_method["tpe"], strict=True))
    means = {m: statistics.mean(r["best"] for r in chosen) for m, chosen in by_method.items()}
    assert means["tpe"] > means["rs"], means


def test_a_minimised_metric_keeps_the_lowest(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    task = [*write_table(tmp_path), "--metric", "acc"]
    argv = [*task, "--minimize", "--methods", "rs", "re"]
    assert bench_main([*argv, "--seeds", "2", "--budget", "15", "--out", str(out)]) == 0
    for run in bench_runs(out):
        trajectory = run["trajectory"]
        assert all(later <= earlier for earlier, later in itertools.pairwise(trajectory))
        assert trajectory[-1] == run["best"] == min(trajectory)
    assert "best acc (lower is better)" in out.with_suffix(".md").read_text()
    with pytest.raises(UsageError, match="minimize True, not False"):  # a maximised bench cannot take these runs
        bench_main(
            [*task, "--methods", "rs", "--seeds", "2", "--budget", "15", "--reuse", str(out.with_suffix(".json"))]
        )


def test_without_out_the_files_go_under_runs_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = Path(__file__).resolve().parents[3] / "benchmarks" / "results"
    before = {path: path.stat().st_mtime_ns for path in results.rglob("*")}
    argv = [*write_table(tmp_path), "--metric", "acc", "--methods", "rs", "--seeds", "1", "--budget", "5"]
    monkeypatch.chdir(tmp_path)
    assert bench_main(argv) == 0
    (folder,) = (tmp_path / "runs" / "bench").iterdir()
    assert folder.name.startswith("table-")
    assert {path.name for path in folder.iterdir()} == {"bench.md", "bench.json", "bench.png"}
    assert {path: path.stat().st_mtime_ns for path in results.rglob("*")} == before


def test_bad_space_or_out_is_one_error_line_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = write_table(tmp_path)
    argv = ["bench", "--metric", "acc", "--methods", "rs", "--seeds", "1", "--budget", "5"]
    missing = [*task[:2], "--space", str(tmp_path / "missing.yaml"), *task[4:]]
    assert cli_main([*argv, *missing, "--out", str(tmp_path / "out" / "b")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "missing.yaml" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    (tmp_path / "a-file").write_text("")
    assert cli_main([*argv, *task, "--out", str(tmp_path / "a-file" / "b")]) == 2
    assert "error: --out" in capsys.readouterr().err


def test_history_cap_reaches_every_reader_of_the_history_and_no_other_method(
    tmp_path: Path, nb201_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--history-cap`` changes what a nearest reader weighs, so its runs differ; random search ignores it
    and its runs are the same. Runs of another cap are not reused; a cap of 0 is one error line before any run."""
    common = ["--datasets", "cifar10", "--seeds", "3", "--budget", "25", "--data", str(nb201_dir)]
    methods = ["--methods", "rs", "nearest-mean-mixed-pool"]
    assert bench_main([*methods, *common, "--out", str(tmp_path / "default")]) == 0
    assert bench_main([*methods, *common, "--history-cap", "1", "--out", str(tmp_path / "one")]) == 0

    def trajectories(name: str, method: str) -> list[list]:
        runs = json.loads((tmp_path / f"{name}.json").read_text())["runs"]
        return [run["trajectory"] for run in runs if run["method"] == method]

    assert trajectories("default", "rs") == trajectories("one", "rs")
    assert trajectories("default", "nearest-mean-mixed-pool") != trajectories("one", "nearest-mean-mixed-pool")
    capsys.readouterr()
    with pytest.raises(UsageError, match="its runs have history_cap 1, not None"):
        bench_main([*methods, *common, "--reuse", str(tmp_path / "one.json"), "--out", str(tmp_path / "again")])
    zero = ["bench", *methods, *common, "--history-cap", "0", "--out", str(tmp_path / "zero" / "b")]
    assert cli_main(zero) == 2
    err = capsys.readouterr().err
    assert "error: --history-cap must be at least 1, got 0" in err and "Traceback" not in err
    assert not (tmp_path / "zero").exists()


def test_db_keeps_every_run_with_its_decisions(tmp_path: Path, nb201_dir: Path) -> None:
    """Without --db the runs go to a temporary database; with it they stay, each named in the JSON, so that
    ``show`` can audit a bench's decisions afterwards."""
    db, out = tmp_path / "bench.db", tmp_path / "b"
    argv = ["--methods", "rs", "nearest-mixed-pool", "--datasets", "cifar10", "--seeds", "2", "--budget", "12"]
    assert bench_main([*argv, "--data", str(nb201_dir), "--db", str(db), "--out", str(out)]) == 0
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    with sqlite3.connect(db) as connection:
        stored = dict(connection.execute("SELECT run_id, best_score FROM runs").fetchall())
        decided = connection.execute("SELECT COUNT(*) FROM decisions WHERE run_id = ?", (runs[-1]["run_id"],))
        assert decided.fetchone()[0] == 12
    assert stored == {run["run_id"]: run["best"] for run in runs} and len(stored) == 4


def test_under_a_constraint_the_bench_reports_the_best_feasible(tmp_path: Path) -> None:
    """test_acc plays a constrained metric: acc - 0.5 <= 57 keeps part of the table; no run's best breaks it."""
    out = tmp_path / "bench"
    argv = [*write_table(tmp_path), "--metric", "acc", "--constraint", "test_acc<=57", "--methods", "rs", "tpe"]
    db = tmp_path / "runs.db"
    assert bench_main([*argv, "--seeds", "2", "--budget", "40", "--out", str(out), "--db", str(db)]) == 0
    for run in bench_runs(out):
        assert run["best"] <= 57.5, "the best is feasible (the table's best acc is 72)"
    with sqlite3.connect(db) as connection:
        statuses = {status for (status,) in connection.execute("SELECT status FROM evaluations")}
    assert statuses == {"ok", "infeasible"}, "the search met infeasible results and kept them out of the best"


def test_no_seeds_is_refused_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench_main([*write_table(tmp_path), "--metric", "acc", "--seeds", "0", "--out", str(tmp_path / "b")])
    assert exit_.value.code == 2 and "--seeds: must be at least 1, got 0" in capsys.readouterr().err
