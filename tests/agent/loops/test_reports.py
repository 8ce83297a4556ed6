"""Multi-fidelity searches end to end: evaluations report as they train, the run's scheduler stops the poor ones,
and the run database records it all, through the real loop and a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent import SearchError, Study
from agent.config import ConfigError
from tests.agent.objectives import space_definition

CURVE = "tests.agent.objectives:learning_curve"


def rows(db: Path, run_id: str) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        query = "SELECT ncode, status, fidelity, score FROM evaluations WHERE run_id = ? ORDER BY id"
        return connection.execute(query, [run_id]).fetchall()


def reports(db: Path, run_id: str) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        query = "SELECT ncode, step, value FROM reports WHERE run_id = ? ORDER BY ncode, step"
        return connection.execute(query, [run_id]).fetchall()


def search(db: Path, run_id: str, **options) -> list[tuple]:
    options = {"ranker": "nearest-mean", "budget": 16, "scheduler": "asha", "max_fidelity": 9, **options}
    with Study.create(db, space_definition(), CURVE, metric="acc", run_id=run_id, **options) as study:
        study.optimize()
    return rows(db, run_id)


@pytest.mark.parametrize("scheduler", ["asha", "hyperband", "median"])
def test_the_scheduler_stops_poor_trainings_and_the_record_says_so(tmp_path, scheduler):
    db = tmp_path / "s.db"
    evaluations = search(db, "s", scheduler=scheduler, max_fidelity=None if scheduler == "median" else 9)
    assert len(evaluations) == 16 and len({row[0] for row in evaluations}) == 16
    stopped = [row for row in evaluations if row[1] == "stopped"]
    finished = [row for row in evaluations if row[1] == "ok"]
    assert stopped and finished, "some trainings were stopped early, some ran to the end"
    assert all(row[2] < 9 for row in stopped) and all(row[2] == 9 for row in finished)
    curves = reports(db, "s")
    assert len(curves) == sum(row[2] for row in evaluations), "one report per step each evaluation reached"
    last = {ncode: value for ncode, _, value in curves}
    assert all(row[3] == last[row[0]] for row in stopped), "a stopped evaluation keeps its last report as score"
    with Study.load(db, "s") as study:
        assert study.best.status == "ok"
        assert study.best.score == max(row[3] for row in finished)


def test_without_a_scheduler_every_training_runs_to_its_end_and_reports_are_kept(tmp_path):
    evaluations = search(tmp_path / "s.db", "s", scheduler="none", max_fidelity=None, budget=6)
    assert {(row[1], row[2]) for row in evaluations} == {("ok", 9.0)}
    assert len(reports(tmp_path / "s.db", "s")) == 6 * 9


@pytest.mark.parametrize("ranker", ["random", "nearest-mean"])
def test_a_run_interrupted_mid_training_resumes_exactly(tmp_path, monkeypatch, ranker):
    """Ctrl-C at epoch 3 of an evaluation: its reports are dropped and it is trained again on resume, and the
    run ends with the very evaluations, statuses and steps of the run that was never interrupted."""
    uninterrupted = search(tmp_path / "a.db", "a", ranker=ranker, budget=20)
    monkeypatch.setenv("LMSEARCHER_TEST_CRASH", str(tmp_path / "crashed"))
    db = tmp_path / "b.db"
    with pytest.raises(KeyboardInterrupt):
        search(db, "b", ranker=ranker, budget=20)
    assert (tmp_path / "crashed").exists()
    before = rows(db, "b")
    assert 0 < len(before) < 20
    partial = {ncode for ncode, _, _ in reports(db, "b")} - {row[0] for row in before}
    assert len(partial) == 1, "the interrupted evaluation had reported epochs 1 and 2"
    with Study.load(db, "b") as study:
        study.optimize()
    assert rows(db, "b") == uninterrupted
    assert reports(db, "b") == reports(tmp_path / "a.db", "a")


def test_two_workers_share_one_scheduler(tmp_path):
    evaluations = search(tmp_path / "s.db", "s", workers=2, budget=14)
    assert len({row[0] for row in evaluations}) == 14
    assert {"ok", "stopped"} <= {row[1] for row in evaluations}
    assert len(reports(tmp_path / "s.db", "s")) == sum(row[2] for row in evaluations)


def test_a_fidelity_budget_stops_starting_evaluations(tmp_path):
    evaluations = search(tmp_path / "s.db", "s", budget=100, fidelity_budget=40)
    spent = sum(row[2] for row in evaluations)
    assert spent >= 40 and spent - evaluations[-1][2] < 40, "the last evaluation started below the budget"


def test_a_scheduler_the_task_cannot_serve_is_refused_before_the_search(tmp_path):
    with pytest.raises(SearchError, match="--max-fidelity"):
        search(tmp_path / "s.db", "s", max_fidelity=None)
    with pytest.raises(ConfigError, match=r"--reduction-factor 2\.0 applies to --scheduler asha or hyperband"):
        search(tmp_path / "u.db", "u", scheduler="median", reduction_factor=2.0)


def test_a_scheduler_with_nothing_to_judge_says_so(tmp_path, caplog):
    options = {"ranker": "random", "budget": 5, "scheduler": "asha", "max_fidelity": 9, "run_id": "s"}
    with Study.create(tmp_path / "s.db", space_definition(), "tests.agent.objectives:accuracy", **options) as study:
        study.optimize()
    idle = [record.message for record in caplog.records if "has nothing to judge" in record.message]
    assert len(idle) == 1 and "3 evaluations finished without reporting" in idle[0]
