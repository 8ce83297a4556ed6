"""Plugin tasks: a user's Evaluator by module:Class reference or entry point, resumed from the CLI."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from agent.cli.main import main
from evaluators.registry import TaskOptions, make_evaluator
from tests.evaluators.loop import reported
from tools.ncode import sample

PLUGIN = "tests.evaluators.plugin_toy:ToyEvaluator"


def codes(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [code for (code,) in connection.execute("SELECT ncode FROM evaluations ORDER BY id")]


def test_a_plugin_class_searches_and_resumes_by_its_stored_reference(tmp_path):
    db = tmp_path / "p.db"
    argv = ["--task", PLUGIN, "--metric", "total", "--ranker", "evolution", "--db", str(db), "--quiet"]
    assert main([*argv, "--budget", "6", "--run-id", "p"]) == 0
    assert main(["--resume", "p", "--db", str(db), "--budget", "12", "--workers", "2", "--quiet"]) == 0
    found = codes(db)
    assert len(found) == len(set(found)) == 12
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT task, metric FROM runs").fetchone() == (PLUGIN, "total")


def test_a_plugin_without_arguments(tmp_path):
    argv = ["--task", "tests.evaluators.plugin_toy:NoOptions", "--ranker", "random", "--budget", "3"]
    assert main([*argv, "--db", str(tmp_path / "p.db"), "--quiet"]) == 0


def test_an_entry_point_names_a_plugin(tmp_path, monkeypatch):
    info = tmp_path / "toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[lmsearcher.tasks]\ntoy = {PLUGIN}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert (
        main(["--task", "toy", "--ranker", "random", "--budget", "3", "--db", str(tmp_path / "p.db"), "--quiet"]) == 0
    )


def test_bad_plugins_get_one_clear_line(tmp_path, capsys):
    db = ["--db", str(tmp_path / "p.db"), "--quiet"]
    cases = {
        "nowhere:Thing": "cannot import module 'nowhere'",
        "tests.evaluators.plugin_toy:Missing": "has no 'Missing'",
        "tests.evaluators.plugin_toy:not_an_evaluator": "made a str, not an Evaluator",
        "no_such_task": "unknown task 'no_such_task'",
    }
    for task, message in cases.items():
        assert main(["--task", task, "--ranker", "random", *db]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "p.db").exists() or codes(tmp_path / "p.db") == []


@pytest.mark.parametrize("task", ["nas_bench_graph", "nb201", "table"])
def test_a_lookup_task_names_exactly_the_metrics_its_results_give(task, tmp_path):
    """metric_names is what a new run's objectives and constraints are checked against: no name it lacks may be
    reported (a right objective would be refused), and none it has may be missing from every row."""
    options = TaskOptions()
    if task == "table":
        (tmp_path / "space.yaml").write_text("name: t\nslots:\n  - {name: a, options: [x, y]}\n")
        (tmp_path / "rows.csv").write_text("a,acc,params,flops\nx,0.5,10,\ny,0.7,20,3\n")
        options = TaskOptions(space=str(tmp_path / "space.yaml"), data=str(tmp_path / "rows.csv"), metric="acc")
    evaluator = make_evaluator(task, options)
    codes = [sample(evaluator.space, random.Random(seed)) for seed in range(5)] if task != "table" else ["0", "1"]
    assert set().union(*(reported(evaluator, code) for code in codes)) == evaluator.metric_names()
