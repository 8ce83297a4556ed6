"""Users' own rankers through the real loop and a real run database: by reference from the CLI, as objects
from Python, and held to the ranker contract (a ranker that breaks it stops the run, which resumes)."""

from __future__ import annotations

import json
import sqlite3

import pytest
import yaml

from agent import ConfigError, RankerStopped, SearchError, Study
from agent.cli.common import EXIT_BAD_INPUT, EXIT_STOPPED
from agent.cli.main import main
from agent.runs.store import open_store
from tests.agent import objectives
from tests.agent.rankers import Breaking, Smallest


@pytest.fixture
def search_args(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(objectives.space_definition()))
    task = ["--task", "objective", "--objective", "tests.agent.objectives:accuracy", "--space", str(space_file)]
    return [*task, "--db", str(tmp_path / "s.db"), "--quiet"]


def decisions(db, run_id: str) -> list[tuple[list[str], list[str]]]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT pool, chosen FROM decisions WHERE run_id = ? ORDER BY iteration", [run_id]
        ).fetchall()
    return [(json.loads(pool), json.loads(chosen)) for pool, chosen in rows]


def evaluated(db, run_id: str) -> list[str]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT ncode FROM evaluations WHERE run_id = ? ORDER BY id", [run_id]).fetchall()
    return [code for (code,) in rows]


@pytest.mark.parametrize("reference", ["tests.agent.rankers:Smallest", "tests.agent.rankers:make_smallest"])
def test_a_referenced_ranker_picks_every_step_and_the_cli_resumes_it(tmp_path, search_args, reference):
    assert main([*search_args, "--ranker", reference, "--budget", "8", "--run-id", "r"]) == 0
    assert main(["--resume", "r", "--db", str(tmp_path / "s.db"), "--budget", "12", "--quiet"]) == 0
    steps = decisions(tmp_path / "s.db", "r")
    assert len(steps) == 12 and all(chosen == [min(pool)] for pool, chosen in steps)
    assert evaluated(tmp_path / "s.db", "r") == [chosen[0] for _, chosen in steps]
    run = open_store(tmp_path / "s.db").get_run("r")
    assert run["config"]["ranker"] == reference


def test_a_ranker_object_drives_a_study_and_is_needed_again_to_resume_it(tmp_path):
    db, ranker = tmp_path / "s.db", Smallest()
    with Study.create(db, objectives.space_definition(), objectives.accuracy, ranker=ranker, budget=6, run_id="o") as s:
        s.optimize()
        assert s.config.ranker == "object:Smallest"
    assert ranker.calls == 6 and not ranker.closed  # the user's object stays theirs to close
    with Study.load(db, "o", objectives.accuracy) as study, pytest.raises(SearchError, match="resume it from Python"):
        study.optimize(budget=10)
    with Study.load(db, "o", objectives.accuracy, ranker=ranker) as study:
        study.optimize(budget=10)
        trial = study.ask()  # ask/tell goes through the same object
        study.tell(trial, 0.5)
        assert len(study.history) == 11
    assert ranker.calls == 11
    assert all(chosen == [min(pool)] for pool, chosen in decisions(db, "o"))
    wrong = Breaking("raises")  # an object of another class than the run's
    with (
        Study.load(db, "o", objectives.accuracy, ranker=wrong) as study,
        pytest.raises(SearchError, match=r"ranker object \(Breaking\) drives only a run whose ranker it is"),
    ):
        study.optimize(budget=12)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("raises", "raised KeyError: \"slot 'depth'\""),
        ("returns_a_list", "returned a list, not a Decision"),
        ("chooses_outside", "chose '999', which is not in the pool"),
        ("chooses_twice", "chose the same code twice"),
        ("chooses_none", "chose 0 codes where 1 were asked for"),
    ],
)
def test_a_ranker_that_breaks_the_contract_stops_the_run_with_its_evaluations_saved(
    tmp_path, search_args, capsys, factory, message
):
    reference = f"tests.agent.rankers:{factory}"
    assert main([*search_args, "--ranker", reference, "--budget", "10", "--run-id", "b"]) == EXIT_STOPPED
    err = capsys.readouterr().err
    assert f"ranker {reference} {message}" in err and "Traceback" not in err
    assert "continue with: python main.py --resume b" in err
    run = open_store(tmp_path / "s.db").get_run("b")
    before = evaluated(tmp_path / "s.db", "b")
    assert run["status"] == "stopped" and len(before) == 3
    with Study.load(tmp_path / "s.db", "b", objectives.accuracy) as study, pytest.raises(RankerStopped, match=factory):
        study.optimize()  # resumed: a new ranker from the reference ranks three times and breaks again
    after = evaluated(tmp_path / "s.db", "b")
    assert after[:3] == before and len(set(after)) == len(after) == 6  # nothing lost, nothing repeated


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("tests.agent.nowhere:Mine", "cannot import module 'tests.agent.nowhere' of ranker"),
        ("tests.agent.rankers:Missing", "module 'tests.agent.rankers' has no 'Missing'"),
        ("tests.agent.rankers:not_a_ranker", "is a int, not a Ranker: subclass"),
        ("tests.agent.rankers:failing_to_build", "failed to build: OSError: weights.pt not found"),
    ],
)
def test_a_ranker_that_cannot_be_built_is_refused_before_any_run(tmp_path, search_args, capsys, reference, message):
    assert main([*search_args, "--ranker", reference, "--budget", "3", "--run-id", "x"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert open_store(tmp_path / "s.db").get_run("x") is None


def test_an_object_run_cannot_be_resumed_from_the_cli(tmp_path, capsys):
    db = tmp_path / "s.db"
    with Study.create(db, objectives.space_definition(), objectives.accuracy, ranker=Smallest(), budget=2) as study:
        study.optimize()
        run_id = study.run_id
    assert main(["--resume", run_id, "--db", str(db), "--budget", "4", "--quiet"]) == EXIT_BAD_INPUT
    assert "this run's ranker was a Python object (Smallest); resume it from Python" in capsys.readouterr().err


def test_a_ranker_class_is_refused_with_the_two_ways_to_pass_it(tmp_path):
    with pytest.raises(ConfigError, match=r"pass Smallest\(\) or 'tests.agent.rankers:Smallest'"):
        Study.create(tmp_path / "s.db", objectives.space_definition(), objectives.accuracy, ranker=Smallest)
