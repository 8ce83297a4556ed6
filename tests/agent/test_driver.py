"""The library entry point: how runs are created in a database."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import agent.driver
from agent.driver import Search, SearchConfig, SearchError
from tests.agent.objectives import space_definition

ROOT = Path(__file__).resolve().parents[2]

CONFIG = SearchConfig(
    task="objective", objective="tests.agent.objectives:accuracy", space=space_definition(), ranker="random", budget=2
)


def test_a_generated_run_id_that_is_taken_is_drawn_again(tmp_path, monkeypatch):
    """Two library runs started in the same second can draw the same 4-hex suffix; the second must not fail."""
    drawn = iter(["run-abcd", "run-abcd", "run-ef01"])
    monkeypatch.setattr(agent.driver, "new_run_id", lambda config: next(drawn))
    search = Search(tmp_path / "runs.db")
    try:
        first = search.start(CONFIG)
        second = search.start(CONFIG)
    finally:
        search.close()
    assert (first.run_id, second.run_id) == ("run-abcd", "run-ef01")
    assert first.evaluations == second.evaluations == 2


def test_an_explicit_run_id_that_is_taken_is_refused_with_the_way_to_resume_it(tmp_path):
    search = Search(tmp_path / "runs.db")
    try:
        search.start(CONFIG, run_id="mine")
        with pytest.raises(SearchError, match=r"already exists .*--resume mine"):
            search.start(CONFIG, run_id="mine")
    finally:
        search.close()


ASYNC_ASHA = {
    "task": "objective", "objective": "tests.agent.objectives:learning_curve", "space": space_definition(),
    "metric": "acc", "mode": "async", "workers": 1, "scheduler": "asha", "max_fidelity": 9,
}  # fmt: skip


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"metric": "accuracy"}, "--metric accuracy: --task nas_bench_graph scores val_acc; give --metric val_acc"),
        ({"minimize": True}, "--minimize: --task nas_bench_graph maximizes val_acc"),
        ({"metric": "val_acc", "objectives": ["latency:min"]}, "--metric latency:min: --task nas_bench_graph reports "
         "no 'latency'; its metrics are latency_s, params_m, test_acc, val_acc"),
        ({"constraint": ["params<=1"]}, "--constraint params<=1: --task nas_bench_graph reports no 'params'"),
    ],
)  # fmt: skip
def test_a_metric_the_task_does_not_report_is_refused_before_the_run_exists(tmp_path, options, said):
    """A first metric a table task does not score would be ignored, and an objective or constraint on a metric it
    never reports would fail every evaluation: both are said at once, and no run is created."""
    search = Search(tmp_path / "runs.db")
    try:
        config = SearchConfig(task="nas_bench_graph", ranker="random", budget=3, **options)
        with pytest.raises(SearchError, match=re.escape(said)):
            search.start(config)
        assert search.store.list_runs() == []
        right = SearchConfig(task="nas_bench_graph", ranker="random", budget=3, metric="val_acc",
                             objectives=["latency_s:min"], constraint=["params_m<=0.1"])  # fmt: skip
        result = search.start(right)
        assert result.evaluations == 3 and result.statuses.get("failed", 0) == 0
    finally:
        search.close()


@pytest.mark.parametrize(
    "config",
    [{"ranker": "local-search"}, {"ranker": "evolution"}, {"ranker": "evolution", **ASYNC_ASHA}],
    ids=["local-search", "evolution", "async-asha"],
)
def test_a_run_killed_after_any_write_resumes_to_the_uninterrupted_sequence(tmp_path, config):
    """SIGKILL just after every write of a run (store or checkpoint), then resume: the same evaluations in
    the same order. A kill between a node saving its result and the next checkpoint once restarted the step.
    The asynchronous loop under ASHA too: its pending marks and intermediate reports are writes as well."""
    config = {**config, "budget": 3, "seed": 1}
    done = subprocess.run(
        [sys.executable, "-m", "tests.kill_points", json.dumps(config), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["expected"]) == 3 and result["kill_points"] >= 30  # about 12 writes per step
    assert result["differing"] == {}
