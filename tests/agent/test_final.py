"""The final stage: the best configurations trained again, several seeds each, resumable, kept out of the search."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from agent import Study
from agent.cli.main import main
from agent.final import FinalStageError
from tests.agent.objectives import space_definition

ROOT = Path(__file__).resolve().parents[2]


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_the_best_are_trained_again_with_other_seeds_and_the_pick_is_the_best_mean(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("LMSEARCHER_TEST_LOG", str(log))
    with Study.create(
        tmp_path / "s.db", space_definition(), "tests.agent.objectives:seeded", ranker="random", budget=8, seed=5,
        max_fidelity=1,
    ) as study:  # fmt: skip
        study.optimize()
        searched = {trial.ncode: trial.score for trial in study.history}
        assert {(int(seed), float(fidelity)) for *_, seed, fidelity in map(str.split, calls(log))} == {(5, 1.0)}
        finals = study.final(top=3, fidelity=9, seeds=2)
        best_three = sorted(searched, key=searched.get, reverse=True)[:3]
        assert sorted(f.ncode for f in finals) == sorted(best_three)
        for result in finals:  # trained with seeds 6 and 7 for 9 epochs: + 0.006/0.007 + 0.09 - 0.005 - 0.01
            assert result.scores == pytest.approx((searched[result.ncode] + 0.081, searched[result.ncode] + 0.082))
            assert result.mean == pytest.approx(statistics.fmean(result.scores)) and result.sd > 0
        assert finals[0].mean == max(f.mean for f in finals)
        assert len(calls(log)) == 8 + 6
        assert len(study.history) == 8 and study.best.score == max(searched.values()), "finals stay out of the search"
        assert [f.ncode for f in study.final(top=3, fidelity=9, seeds=2)] == [f.ncode for f in finals]
        assert len(calls(log)) == 8 + 6, "asked again, nothing is trained twice"


def test_an_interrupted_final_stage_trains_only_what_is_missing(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("LMSEARCHER_TEST_LOG", str(log))
    monkeypatch.setenv("LMSEARCHER_TEST_CRASH", str(tmp_path / "crashed"))
    db = tmp_path / "s.db"
    options = {"ranker": "random", "budget": 6, "final_top": 2, "final_seeds": 3, "run_id": "f"}
    with Study.create(db, space_definition(), "tests.agent.objectives:seeded", **options) as study:
        with pytest.raises(KeyboardInterrupt):
            study.optimize()  # the search, then the final stage: seed 1 of both, then a Ctrl-C at seed 2
        assert len(calls(log)) == 6 + 2
    assert main(["--resume", "f", "--db", str(db), "--quiet"]) == 0
    finals = [line for line in calls(log)[6:]]
    assert sorted(line.split()[3] for line in finals) == ["1", "1", "2", "2", "3", "3"]


def test_a_table_cannot_be_trained_again(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("name: t\nslots:\n  - {name: a, options: [1, 2]}\n")
    (tmp_path / "t.csv").write_text("a,acc\n1,0.5\n2,0.7\n")
    assert main(["--task", "table", "--space", str(space), "--data", str(tmp_path / "t.csv"), "--metric", "acc",
                 "--ranker", "random", "--budget", "2", "--db", str(tmp_path / "s.db"), "--run-id", "t",
                 "--quiet"]) == 0  # fmt: skip
    study = Study.load(tmp_path / "s.db", "t")
    with pytest.raises(FinalStageError, match="cannot train a configuration"), study:
        study.final()
    done = subprocess.run(
        [sys.executable, "main.py", "final", "t", "--db", str(tmp_path / "s.db")], cwd=ROOT, capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "error: task 'table' cannot train a configuration again" in done.stderr


def test_the_final_command_waits_for_a_finished_search(tmp_path):
    with Study.create(tmp_path / "s.db", space_definition(), None, run_id="open") as study:
        study.tell(study.ask(), 0.5)
    done = subprocess.run(
        [sys.executable, "main.py", "final", "open", "--db", str(tmp_path / "s.db")], cwd=ROOT, capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "not finished; finish it first with: python main.py --resume open" in done.stderr
