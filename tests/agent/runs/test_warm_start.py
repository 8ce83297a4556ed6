"""Warm starts end to end on real run databases: known results, queued configurations and transfer sources."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import SearchError, SearchSpace, Slot, Study
from agent.cli.main import main
from agent.runs.store import RunStore, open_connection
from agent.strategies.rankers import Decision, Ranker, RankRequest
from tests.agent import objectives
from tests.agent.objectives import ACTIVATIONS, DEPTHS, WIDTHS
from tools.ncode import encode

ROOT = Path(__file__).resolve().parents[3]

SPACE = SearchSpace("toy", [Slot("depth", DEPTHS), Slot("width", WIDTHS), Slot("activation", ACTIVATIONS)])


class Recording(Ranker):
    """Takes the pool's first code and remembers the history each decision read."""

    name = "recording"

    def __init__(self) -> None:
        self.histories: list[list[str]] = []

    def rank(self, request: RankRequest) -> Decision:
        self.histories.append([o.ncode for o in request.history])
        return Decision(chosen=request.pool[: request.k], pool=request.pool)


def earlier_run(db: Path, run_id: str = "earlier", objective=objectives.accuracy, budget: int = 8) -> list[str]:
    with Study.create(db, SPACE, objective, ranker="random", budget=budget, run_id=run_id, seed=3) as study:
        study.optimize()
        return [trial.ncode for trial in study.history]


def own_codes(db: Path, run_id: str) -> list[str]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT ncode FROM evaluations WHERE run_id = ? ORDER BY id", [run_id]).fetchall()
    return [code for (code,) in rows]


def test_known_results_are_read_by_the_ranker_but_never_evaluated_or_counted(tmp_path):
    db = tmp_path / "s.db"
    known = earlier_run(db)
    ranker = Recording()
    with Study.create(
        db, SPACE, objectives.accuracy, ranker=ranker, budget=5, run_id="warm", warm_start="earlier"
    ) as study:
        study.optimize()
        assert [trial.ncode for trial in study.known] == known
        assert len(study.history) == 5  # the budget counts the run's own evaluations only
        assert not set(own_codes(db, "warm")) & set(known)
        assert ranker.histories[0] == known  # the first decision already reads every known result
        assert study.best.ncode in own_codes(db, "warm")


def test_warm_start_from_an_export_csv_and_from_a_csv_of_slot_columns(tmp_path):
    db = tmp_path / "s.db"
    known = earlier_run(db)
    export = tmp_path / "earlier.csv"
    assert main(["export", "earlier", "--db", str(db), "--out", str(export)]) == 0
    handmade = tmp_path / "mine.csv"
    with handmade.open("w", newline="") as handle:  # as a user writes one: text cells, the metric by name
        writer = csv.writer(handle)
        writer.writerow(["depth", "width", "activation", "score", "notes"])
        writer.writerow(["4", "64", "gelu", "0.9", "best so far"])
        writer.writerow(["1", "16", "tanh", "", "not trained yet"])
    with Study.create(
        db, SPACE, objectives.accuracy, ranker="random", budget=3, warm_start=[str(export), str(handmade)]
    ) as study:
        study.optimize()
        best_known = encode(SPACE, {"depth": 4, "width": 64, "activation": "gelu"})
        assert [t.ncode for t in study.known] == [*known, best_known] or best_known in known
        assert {t.score for t in study.known if t.ncode in known} == {
            objectives.accuracy(t.config) for t in study.known if t.ncode in known
        }
        untrained = encode(SPACE, {"depth": 1, "width": 16, "activation": "tanh"})
        assert study.history[0].ncode == untrained  # a row without a score is evaluated first, within the budget


def test_a_list_of_configurations_is_evaluated_first_in_order(tmp_path):
    configs = [{"depth": 8, "width": 16, "activation": "relu"}, {"depth": 2, "width": 128, "activation": "tanh"}]
    listing = tmp_path / "first.yaml"
    listing.write_text("\n".join(f"- {json.dumps(config)}" for config in configs) + "\n")
    with Study.create(
        tmp_path / "s.db", SPACE, objectives.accuracy, ranker="gp", budget=4, warm_start=str(listing)
    ) as study:
        study.optimize()
        assert [t.config for t in study.history[:2]] == configs
        assert len(study.history) == 4 and study.known == []


def test_enqueue_survives_an_interruption_and_is_never_repeated(tmp_path, monkeypatch):
    db = tmp_path / "s.db"
    monkeypatch.setenv("LMSEARCHER_TEST_CRASH", str(tmp_path / "crashed"))
    first = {"depth": 2, "width": 32, "activation": "relu"}
    second = {"depth": 4, "width": 128, "activation": "gelu"}  # width 128: the objective is interrupted here once
    study = Study.create(db, SPACE, objectives.interrupted_once, ranker="random", budget=4, run_id="q")
    study.enqueue(first)
    study.enqueue(second)
    with pytest.raises(SearchError, match="already evaluated, known or queued"):
        study.enqueue(first)
    with pytest.raises(KeyboardInterrupt):
        study.optimize()
    study.close()
    with Study.load(db, "q") as resumed:
        resumed.optimize()
        configs = [t.config for t in resumed.history]
    assert configs[:2] == [first, second] and len(configs) == len({json.dumps(c) for c in configs}) == 4


def test_transfer_evaluates_the_source_best_first_and_never_reads_its_scores(tmp_path):
    db = tmp_path / "s.db"
    earlier_run(db, "cifar", objectives.accuracy_elsewhere, budget=10)
    with Study.load(db, "cifar") as source:
        best_there = [t.ncode for t in sorted(source.history, key=lambda t: -t.score)[:3]]
    ranker = Recording()
    with Study.create(
        db, SPACE, objectives.accuracy, ranker=ranker, budget=5, transfer="cifar", transfer_top=3
    ) as study:
        study.optimize()
        assert [t.ncode for t in study.history[:3]] == best_there
        assert study.known == [] and ranker.histories[0] == best_there  # the ranker reads their scores from here
        assert all(t.score == objectives.accuracy(t.config) for t in study.history)


def test_a_run_of_another_task_is_refused_as_a_warm_start_and_named_for_transfer(tmp_path):
    db = tmp_path / "s.db"
    earlier_run(db, "cifar", objectives.accuracy_elsewhere)
    with pytest.raises(SearchError, match="Use --transfer cifar"):
        Study.create(db, SPACE, objectives.accuracy, budget=3, run_id="new", warm_start="cifar")
    with sqlite3.connect(db) as connection:  # nothing was created
        assert connection.execute("SELECT COUNT(*) FROM runs WHERE run_id = 'new'").fetchone()[0] == 0


def test_a_source_of_another_space_is_one_clear_error(tmp_path):
    db = tmp_path / "s.db"
    earlier_run(db)
    other = SearchSpace("toy", [Slot("depth", DEPTHS), Slot("width", [8, 16, 32, 64]), Slot("activation", ACTIVATIONS)])
    with pytest.raises(SearchError, match="is not a configuration of space 'toy'"):
        Study.create(db, other, objectives.accuracy, budget=3, transfer="earlier")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nowhere", "neither a file nor a run of"),
        ("missing.csv", "no such file"),
    ],
)
def test_unknown_sources_say_what_is_accepted(tmp_path, source, message):
    with pytest.raises(SearchError, match=message):
        Study.create(tmp_path / "s.db", SPACE, objectives.accuracy, budget=3, warm_start=source)


def test_the_cli_warm_starts_from_another_database_without_touching_it(tmp_path, capsys):
    other = tmp_path / "last_week.db"
    known = earlier_run(other)
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps(objectives.space_definition()))
    db = tmp_path / "runs.db"
    argv = ["--task", "objective", "--space", str(space), "--objective", "tests.agent.objectives:accuracy",
            "--ranker", "random", "--budget", "4", "--db", str(db), "--run-id", "cli", "--quiet",
            "--warm-start", f"{other}:earlier"]  # fmt: skip
    assert main(argv) == 0
    assert hashlib.sha256(other.read_bytes()).hexdigest() == digest
    assert not set(own_codes(db, "cli")) & set(known) and len(own_codes(db, "cli")) == 4
    capsys.readouterr()
    assert main(["show", "cli", "--db", str(db), "--plot", str(tmp_path / "p.png")]) == 0
    assert f"warm start: {len(known)} known results from {other}:earlier" in capsys.readouterr().out


RANGES_SCRIPT = """
import sys
from agent import Study
from tests.agent.objectives import RANGES_SPACE
study = Study.create(sys.argv[1], RANGES_SPACE, "tests.agent.objectives:slow_ranges", ranker="nearest-mean",
                     budget=12, seed=4, run_id="k", warm_start=[sys.argv[2]])
study.optimize()
"""


def test_ranges_conditions_and_a_csv_warm_start_resume_exactly_after_sigkill(tmp_path):
    """A user's first day end to end: numeric and conditional slots, results from a CSV (one of them without a
    score, so evaluated first), the process SIGKILLed mid-run and the study loaded again: the same evaluations as
    an uninterrupted run, the known results read but never evaluated or counted."""
    results = tmp_path / "earlier.csv"
    with results.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["lr", "depth", "width_2", "act", "score"])
        writer.writerow(["0.01", "2", "64", "gelu", "2.5"])
        writer.writerow(["0.001", "1", "", "relu", "0.4"])  # width_2 is inactive at depth 1
        writer.writerow(["0.1", "3", "256", "gelu", ""])  # not trained yet: evaluated first, within the budget

    def codes(db: Path) -> list[str]:
        store = RunStore(open_connection(db))
        try:
            return [row["ncode"] for row in store.evaluations("k")]
        finally:
            store.db.conn.close()

    killed, reference = tmp_path / "killed.db", tmp_path / "reference.db"
    child = subprocess.Popen([sys.executable, "-c", RANGES_SCRIPT, str(killed), str(results)], cwd=ROOT,
                             start_new_session=True)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and (not killed.exists() or len(codes(killed)) < 4):
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    before = codes(killed)
    assert 4 <= len(before) < 12
    with Study.load(killed, "k") as study:
        study.optimize()
        known = {trial.ncode for trial in study.known}
        first = study.history[0].config
    done = subprocess.run([sys.executable, "-c", RANGES_SCRIPT, str(reference), str(results)], cwd=ROOT, timeout=120)
    assert done.returncode == 0
    after = codes(killed)
    assert after[: len(before)] == before and after == codes(reference)
    assert len(after) == len(set(after)) == 12 and not known & set(after) and len(known) == 2
    assert first == {"lr": 0.1, "depth": 3, "width_2": 256, "act": "gelu"}
