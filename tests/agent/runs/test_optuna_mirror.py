"""The Optuna mirror of real run databases made by real searches (agent/runs/optuna_mirror.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from agent import Study
from agent.cli.main import main
from agent.runs.optuna_mirror import FROM_SPACE, FROM_VALUES, OptunaMirror, mirror_path
from agent.runs.store import RunStore, open_connection
from tests.agent import objectives
from tools.spaces import nas_bench_graph_space


def sync(db: Path) -> int:
    with OptunaMirror(db, mirror_path(db)) as mirror:
        return mirror.sync()


def mirrored(db: Path, run_id: str) -> optuna.Study:
    return optuna.load_study(study_name=run_id, storage=f"sqlite:///{mirror_path(db)}")


def assert_mirrors_evaluations(db: Path, run_id: str, trials: list[FrozenTrial]) -> None:
    """Trial n is evaluation n: its score, its decoded configuration, its NCode and cost."""
    store = RunStore(open_connection(db))
    evaluations = list(store.evaluations(run_id))
    assert [t.number for t in trials] == list(range(len(evaluations)))
    assert [(t.value, t.params, t.user_attrs["ncode"], t.user_attrs["cost_s"]) for t in trials] == [
        (e["score"], e["config"], e["ncode"], e["cost_s"]) for e in evaluations
    ]
    store.db.conn.close()


def test_the_mirror_only_reads_the_run_database(tmp_path):
    """The dashboard mirrors a database a search may be writing, or one the user may not write: its connection
    to it is read-only, so no sync can change a recorded result."""
    db = tmp_path / "s.db"
    assert main(["--ranker", "random", "--budget", "3", "--db", str(db), "--run-id", "r", "--quiet"]) == 0
    before = db.read_bytes()
    with OptunaMirror(db, mirror_path(db)) as mirror:
        assert mirror.sync() == 3
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            mirror.store.db.conn.execute("DELETE FROM evaluations")
    assert db.read_bytes() == before


def test_a_search_is_mirrored_once_and_its_resumed_evaluations_appended(tmp_path):
    db = tmp_path / "s.db"
    assert main(["--ranker", "evolution", "--budget", "8", "--db", str(db), "--run-id", "r", "--quiet"]) == 0
    with OptunaMirror(db, mirror_path(db)) as mirror:
        assert mirror.sync() == 8
        assert mirror.sync() == 0
    assert sync(db) == 0  # a new mirror (a restarted dashboard) reads where the last one stopped
    study = mirrored(db, "r")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.user_attrs == {
        "task": "nas_bench_graph", "dataset": "cora", "metric": "val_acc", "ranker": "evolution", "choices": FROM_SPACE,
    }  # fmt: skip
    assert_mirrors_evaluations(db, "r", study.trials)
    space = nas_bench_graph_space("cora")
    assert {name: d.choices for name, d in study.trials[0].distributions.items()} == {
        slot.name: slot.options for slot in space.slots
    }
    decisions = RunStore(open_connection(db)).decisions("r")
    assert [(t.user_attrs["ranker"], t.user_attrs["pool_size"], t.user_attrs["fallback"]) for t in study.trials] == [
        (d["ranker"], len(json.loads(d["pool"])), bool(d["fallback"])) for d in decisions
    ]
    assert not any("walked_inside_from" in t.user_attrs for t in study.trials), "only where a code was walked"

    assert main(["--resume", "r", "--db", str(db), "--budget", "12", "--quiet"]) == 0
    assert sync(db) == 4
    assert_mirrors_evaluations(db, "r", mirrored(db, "r").trials)


def test_failed_evaluations_are_fail_trials(tmp_path):
    db = tmp_path / "s.db"
    with Study.create(
        db, objectives.space_definition(), objectives.failing_on_tanh, ranker="random", budget=12, run_id="f"
    ) as study:
        study.optimize()
        history = study.history
    failed = [t for t in history if t.status != "ok"]
    assert failed, "the objective fails on tanh and at depth 8"
    assert sync(db) == 12
    trials = mirrored(db, "f").trials
    assert [t.state == TrialState.FAIL for t in trials] == [t.status != "ok" for t in history]
    assert {t.user_attrs["error"] for t in trials if t.state == TrialState.FAIL} == {t.error for t in failed}
    assert all(t.value is None for t in trials if t.state == TrialState.FAIL)
    assert mirrored(db, "f").user_attrs["choices"] == FROM_SPACE  # the space stored with the run


def test_without_its_space_a_study_takes_the_values_seen_and_is_rebuilt_when_new_ones_appear(tmp_path):
    space_file, db = tmp_path / "space.yaml", tmp_path / "s.db"
    space_file.write_text(yaml.safe_dump(objectives.space_definition()))
    search = ["--task", "objective", "--objective", "tests.agent.objectives:accuracy", "--space", str(space_file)]
    assert main([*search, "--ranker", "random", "--budget", "2", "--db", str(db), "--run-id", "o", "--quiet"]) == 0
    space_file.unlink()  # moved since the run started: the mirror can only know the values seen
    assert sync(db) == 2
    study = mirrored(db, "o")
    assert study.user_attrs["choices"] == FROM_VALUES
    seen = {name: {t.params[name] for t in study.trials} for name in ("depth", "width", "activation")}
    assert {name: set(d.choices) for name, d in study.trials[0].distributions.items()} == seen

    space_file.write_text(yaml.safe_dump(objectives.space_definition()))
    assert main(["--resume", "o", "--db", str(db), "--budget", "10", "--quiet"]) == 0
    space_file.unlink()
    assert sync(db) == 10  # new values: the study is rebuilt with wider choices, every trial again
    trials = mirrored(db, "o").trials
    assert_mirrors_evaluations(db, "o", trials)
    assert {len(set(t.distributions["depth"].choices)) for t in trials} == {len({t.params["depth"] for t in trials})}


def test_reports_are_intermediate_values_and_stopped_evaluations_are_pruned_trials(tmp_path):
    db = tmp_path / "s.db"
    with Study.create(
        db, objectives.space_definition(), "tests.agent.objectives:learning_curve", metric="acc", ranker="random",
        budget=12, run_id="m", scheduler="asha", max_fidelity=9,
    ) as study:  # fmt: skip
        study.optimize()
        history = study.history
    curves = RunStore(open_connection(db)).curves("m")
    assert sync(db) == 12
    trials = mirrored(db, "m").trials
    assert [t.state for t in trials] == [
        {"ok": TrialState.COMPLETE, "stopped": TrialState.PRUNED}[t.status] for t in history
    ]
    assert TrialState.PRUNED in {t.state for t in trials}
    for trial, evaluation in zip(trials, history, strict=True):
        assert trial.intermediate_values == {int(step): value for step, value in curves[evaluation.ncode]}
        assert trial.value == evaluation.score  # a pruned trial keeps its last intermediate value, as Optuna's
        assert trial.last_step == max(trial.intermediate_values)


def test_a_run_of_two_objectives_is_a_multi_objective_study_with_its_constraints(tmp_path):
    db = tmp_path / "s.db"
    with Study.create(
        db, objectives.space_definition(), "tests.agent.objectives:accuracy_and_size", metric=["acc", "params"],
        maximize=[True, False], constraints=["params<=20000"], ranker="random", budget=16, run_id="mo",
    ) as study:  # fmt: skip
        study.optimize()
        front = {trial.values for trial in study.pareto_front}
        history = study.history
    assert sync(db) == 16
    mirrored_study = mirrored(db, "mo")
    assert mirrored_study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    trials = mirrored_study.trials
    assert [t.values for t in trials] == [list(t.values) for t in history]
    infeasible = [t for t in trials if t.user_attrs.get("status") == "infeasible"]
    assert infeasible and all(max(t.system_attrs["constraints"]) > 0 for t in infeasible)
    assert all(max(t.system_attrs["constraints"]) <= 0 for t in trials if t not in infeasible)
    # Optuna's own Pareto front, which optuna-dashboard draws, is ours (Optuna keeps every one of equal results,
    # the run the first): constraints keep the infeasible out of it
    assert {tuple(t.values) for t in mirrored_study.best_trials} == front


def test_numeric_slots_are_float_and_int_distributions_and_inactive_slots_are_absent(tmp_path):
    """optuna-dashboard draws a numeric range on its own axis (a log learning rate on a log axis) only when the
    trial's distribution says it is numeric; a conditional slot that is inactive is not a parameter of the trial."""
    from agent import SearchSpace, Slot

    space = SearchSpace(
        "ranges",
        [
            Slot.float("lr", 1.234564e-4, 1e-1, log=True, levels=5),  # its lowest level rounds below the bound
            Slot.int("depth", 1, 3),
            Slot.int("width_2", 16, 256, log=True, levels=5, when={"depth": [2, 3]}),
            Slot("act", ["relu", "gelu"]),
        ],
    )
    db = tmp_path / "r.db"
    with Study.create(db, space, objectives.ranges_objective, ranker="random", budget=12, seed=3, run_id="r") as study:
        study.enqueue({"lr": space.slots[0].options[0], "depth": 1, "act": "relu"})
        study.optimize()
    assert sync(db) == 12
    trials = mirrored(db, "r").trials
    assert_mirrors_evaluations(db, "r", trials)
    for trial in trials:
        kinds = {name: type(d).__name__ for name, d in trial.distributions.items()}
        expected = {"lr": "FloatDistribution", "depth": "IntDistribution", "act": "CategoricalDistribution"}
        if trial.params["depth"] >= 2:
            expected["width_2"] = "IntDistribution"
        assert kinds == expected
        assert trial.distributions["lr"].log and not trial.distributions["depth"].log
    assert trials[0].params["lr"] == trials[0].distributions["lr"].low < 1.234564e-4


def test_a_trial_walked_inside_the_constraints_names_the_draw_it_came_from(tmp_path):
    """Under a size limit random draws never keep, every pool code is walked inside from a dropped draw
    (tests/agent/test_study.py): each mirrored trial says which, so the dashboard shows that no proposer drew it."""
    db = tmp_path / "s.db"
    with Study.create(
        db, objectives.RANKS_SPACE, objectives.rank_quality, metric=["quality", "params"], maximize=[True, False],
        constraints=["params<=110"], known_before=[objectives.rank_parameters], run_id="r", ranker="random", budget=3,
    ) as study:  # fmt: skip
        study.optimize()
    assert sync(db) == 3
    with sqlite3.connect(db) as connection:
        walked = {
            code: source
            for (text,) in connection.execute("SELECT repaired FROM decisions")
            for source, code in json.loads(text)
        }
    trials = mirrored(db, "r").trials
    assert [t.user_attrs["walked_inside_from"] for t in trials] == [walked[t.user_attrs["ncode"]] for t in trials]
    assert all(t.user_attrs["walked_inside_from"] not in (None, t.user_attrs["ncode"]) for t in trials)
