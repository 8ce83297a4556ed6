"""The Python API end to end: real run databases, the real loop, real worker processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import ConfigError, SearchError, SearchSpace, Slot, Study, Trial
from agent.cli.main import main
from tests.agent import objectives
from tests.agent.objectives import ACTIVATIONS, DEPTHS, WIDTHS
from tools.evaluator import EvaluatorSetupError, Outcome

ROOT = Path(__file__).resolve().parents[2]
SPACE = SearchSpace(
    "toy", [Slot("depth", DEPTHS), Slot("width", WIDTHS), Slot("activation", ACTIVATIONS)]
)  # 48 configurations


def unique_codes(db: Path, run_id: str) -> list[str]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT ncode FROM evaluations WHERE run_id = ? ORDER BY id", [run_id]).fetchall()
    codes = [code for (code,) in rows]
    assert len(codes) == len(set(codes)), "an evaluation was repeated"
    return codes


def test_optimize_a_referenced_objective_with_two_workers(tmp_path):
    db = tmp_path / "s.db"
    with Study.create(
        db, SPACE, "tests.agent.objectives:with_metrics", metric="val_acc", ranker="evolution", budget=12, run_id="s"
    ) as study:
        study.optimize(workers=2)
        assert len(study.history) == 12
        assert study.best.score == max(t.score for t in study.history)
        assert study.best.score == objectives.accuracy(study.best.config)
        assert {"params"} <= set(study.best.metrics)
        assert study.config.objective == "tests.agent.objectives:with_metrics"
    assert len(unique_codes(db, "s")) == 12


def test_a_function_object_is_stored_by_reference_and_the_cli_resumes_it(tmp_path):
    db = tmp_path / "s.db"
    with Study.create(db, SPACE, objectives.accuracy, ranker="random", budget=5, run_id="s") as study:
        study.optimize()
        assert study.config.objective == "tests.agent.objectives:accuracy"
    assert main(["--resume", "s", "--db", str(db), "--budget", "9", "--quiet"]) == 0
    assert len(unique_codes(db, "s")) == 9


def test_a_closure_runs_and_resumes_only_from_python(tmp_path, capsys):
    db = tmp_path / "s.db"
    offset = 0.5

    def objective(config: dict) -> float:  # a closure: no other process can import it
        return objectives.accuracy(config) + offset

    with Study.create(db, SPACE, objective, ranker="evolution", budget=4, run_id="s") as study:
        study.optimize()
        assert study.best.score > 1.0
    assert main(["--resume", "s", "--db", str(db), "--budget", "8", "--quiet"]) == 2
    assert "resumes only from Python" in capsys.readouterr().err
    with Study.load(db, "s", objective=objective) as study:
        study.optimize(budget=8)
        assert len(study.history) == 8
    assert len(unique_codes(db, "s")) == 8


def test_a_closure_with_two_workers(tmp_path):
    calls = []

    def objective(config: dict) -> float:
        calls.append(config)  # runs in a forked worker: the driver's list stays empty
        return objectives.accuracy(config)

    with Study.create(tmp_path / "s.db", SPACE, objective, ranker="evolution", budget=6) as study:
        study.optimize(workers=2)
        assert len(study.history) == 6 and all(t.status == "ok" for t in study.history)
        assert {row.metrics.get("worker_pid") for row in study.history} - {os.getpid()}
    assert calls == []


def test_failures_of_the_objective_are_recorded(tmp_path):
    with Study.create(
        tmp_path / "s.db", SPACE, "tests.agent.objectives:failing_on_tanh", ranker="random", budget=20, seed=3
    ) as study:
        study.optimize()
        by_status = {t.status for t in study.history}
        errors = " ".join(t.error or "" for t in study.history)
    assert by_status == {"ok", "failed"}
    assert "RuntimeError: diverged" in errors and "nan" in errors.lower()


def test_slow_evaluations_time_out(tmp_path):
    with Study.create(
        tmp_path / "s.db", SPACE, "tests.agent.objectives:sleeping_on_depth_8", ranker="random", budget=8,
        seed=1, eval_timeout=1.0,
    ) as study:  # fmt: skip
        started = time.perf_counter()
        study.optimize()
        timed_out = [t for t in study.history if t.error and "timed out after 1 s" in t.error]
    assert timed_out and all(t.config["depth"] == 8 for t in timed_out)
    assert time.perf_counter() - started < 20


def test_ask_and_tell_then_optimize(tmp_path):
    db = tmp_path / "s.db"
    with Study.create(db, SPACE, metric="val_acc", ranker="evolution", budget=10, run_id="s") as study:
        for _ in range(4):
            trial = study.ask()
            study.tell(trial, objectives.with_metrics(trial.config))
        failed = study.ask()
        assert study.tell(failed, error="out of memory").status == "failed"
        with pytest.raises(SearchError, match="already told"):
            study.tell(failed, 0.5)
        assert len(study.history) == 5
    with Study.load(db, "s", objective=objectives.with_metrics) as study:
        study.optimize()
        assert len(study.history) == 10
    assert len(unique_codes(db, "s")) == 10


def test_ask_and_tell_past_the_budget_then_optimize_adds_only_up_to_its_budget(tmp_path):
    """Ask/tell is unbounded, as in Optuna; optimize() after it counts what was told."""
    with Study.create(tmp_path / "s.db", SPACE, objectives.accuracy, ranker="random", budget=2) as study:
        for _ in range(4):
            trial = study.ask()
            study.tell(trial, objectives.accuracy(trial.config))
        study.optimize()
        assert len(study.history) == 4
        study.optimize(budget=6)
        assert len(study.history) == 6 and len({t.ncode for t in study.history}) == 6


def test_telling_a_score_that_is_not_finite_records_a_failure(tmp_path):
    """A number or an Outcome: NaN and inf are failures, as from optimize, so no ranker learns from them."""
    with Study.create(tmp_path / "s.db", SPACE, metric="val_acc", ranker="random", budget=3) as study:
        told = [study.tell(study.ask(), float("nan")), study.tell(study.ask(), Outcome(float("inf")))]
        assert [(t.status, t.score, t.error) for t in told] == [
            ("failed", None, "score is nan (NaN, inf or missing)"),
            ("failed", None, "score is inf (NaN, inf or missing)"),
        ]
        assert study.best is None


def test_a_code_asked_before_a_crash_is_asked_again_first(tmp_path):
    db = tmp_path / "s.db"
    with Study.create(db, SPACE, ranker="random", run_id="s") as study:
        lost = study.ask()  # the process dies before telling
    with Study.load(db, "s") as study:
        assert study.ask().ncode == lost.ncode
        assert study.ask().ncode != lost.ncode


def test_bad_input_is_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        Study.create(tmp_path / "s.db", SPACE, objectives.accuracy, rankr="random")
    with pytest.raises(ValueError, match="cannot import module 'nowhere'"):
        Study.create(tmp_path / "s.db", SPACE, "nowhere:f")
    with pytest.raises(SearchError, match="does not exist"):
        Study.load(tmp_path / "missing.db", "s")
    with (
        Study.create(tmp_path / "s.db", SPACE, ranker="random") as study,
        pytest.raises(SearchError, match="cannot tell"),
    ):
        study.tell("9999", 1.0)


KILLED_SCRIPT = """
import sys
from agent import Study
from tests.agent.objectives import space_definition
study = Study.create(sys.argv[1], space_definition(), "tests.agent.objectives:slow", ranker="evolution",
                     budget=14, run_id="k")
study.optimize(workers=2)
"""


def codes_so_far(db: Path) -> list[str]:
    """The evaluations recorded so far; none while the child is still creating the database's tables."""
    try:
        return unique_codes(db, "k") if db.exists() else []
    except sqlite3.OperationalError as error:
        if "no such table" not in str(error):
            raise
        return []


def test_sigkill_mid_run_then_resume_to_exactly_the_budget(tmp_path):
    db = tmp_path / "s.db"
    child = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, str(db)], cwd=ROOT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(codes_so_far(db)) < 5:
        time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done_before = len(unique_codes(db, "k"))
    assert 5 <= done_before < 14
    with Study.load(db, "k") as study:
        study.optimize()
    assert len(unique_codes(db, "k")) == 14


# -- several objectives and constraints ----------------------------------------------------------------------


def create_two_objective_study(db: Path, **options) -> Study:
    return Study.create(
        db, SPACE, "tests.agent.objectives:accuracy_and_size", metric=["acc", "params"], maximize=[True, False],
        constraints=["params<=20000"], run_id="mo", **{"ranker": "nearest-mean", "budget": 20, **options},
    )  # fmt: skip


def test_two_objectives_keep_a_pareto_front_of_feasible_trials(tmp_path):
    with create_two_objective_study(tmp_path / "s.db") as study:
        study.optimize()
        history = study.history
        front = study.pareto_front
        with pytest.raises(SearchError, match=r"2 objectives .* read study\.pareto_front"):
            study.best  # noqa: B018 (the property raises)
    feasible = [t for t in history if t.status == "ok"]
    assert all(t.values == (t.score, t.metrics["params"]) for t in feasible)
    infeasible = [t for t in history if t.status == "infeasible"]
    assert infeasible and all(t.values[1] > 20000 and "breaks params<=20000" in t.error for t in infeasible)

    def beaten(i: int, t: Trial) -> bool:
        """Dominated, or equal to an earlier trial (the front keeps the first of equal results)."""
        (acc, params) = t.values
        better = any(o.values != t.values and o.values[0] >= acc and o.values[1] <= params for o in feasible)
        return better or any(o.values == t.values for o in feasible[:i])

    expected = {t.ncode for i, t in enumerate(feasible) if not beaten(i, t)}
    assert {t.ncode for t in front} == expected, "exactly the non-dominated"


@pytest.mark.parametrize("known", [False, True], ids=["fronts", "epsilon"])
def test_a_two_objective_run_interrupted_resumes_exactly(tmp_path, monkeypatch, known):
    """The ranker reads a scalarisation drawn from (seed, step): ParEGO's weights, or with the size known before
    evaluating (``auto`` reads it as ``epsilon``) a front member's box. Resumed, the run draws the same and makes
    the same choices."""
    options = {"known_before": [objectives.parameter_count]} if known else {}
    with create_two_objective_study(tmp_path / "a.db", **options) as study:
        study.optimize()
        uninterrupted = [(t.ncode, t.status, t.values) for t in study.history]
    monkeypatch.setenv("LMSEARCHER_TEST_CRASH", str(tmp_path / "crashed"))
    with create_two_objective_study(tmp_path / "b.db", **options) as study, pytest.raises(KeyboardInterrupt):
        study.optimize()
    with Study.load(tmp_path / "b.db", "mo") as study:
        assert len(study.history) == 6
        study.optimize()
        assert [(t.ncode, t.status, t.values) for t in study.history] == uninterrupted


def test_ask_and_tell_of_two_objectives_is_judged(tmp_path):
    with Study.create(tmp_path / "s.db", SPACE, metric=["acc", "params"], maximize=[True, False],
                      constraints=["params<=100"], run_id="at") as study:  # fmt: skip
        told = study.tell(study.ask(), {"acc": 0.9, "params": 500})
        assert (told.status, told.values) == ("infeasible", (0.9, 500.0))
        kept = study.tell(study.ask(), {"acc": 0.5, "params": 50})
        assert [t.ncode for t in study.pareto_front] == [kept.ncode]


def test_a_known_before_function_keeps_every_trial_under_the_limit_and_survives_a_resume(tmp_path, capsys):
    """accuracy_and_size trains; parameter_count only multiplies: under the limit, nothing over it is trained,
    and what was dropped is kept with each step's decision and said by `show`. The same study without it trains
    some over the limit (the control)."""

    def create(name: str, **options) -> Study:
        return Study.create(
            tmp_path / f"{name}.db", SPACE, objectives.accuracy_and_size, metric=["acc", "params"],
            maximize=[True, False], constraints=["params<=5000"], run_id="k", ranker="random", budget=12, **options,
        )  # fmt: skip

    with create("control") as study:
        study.optimize()
        assert "infeasible" in [t.status for t in study.history]
    with create("known", known_before=[objectives.parameter_count]) as study:
        study.optimize()
        assert [t.status for t in study.history] == ["ok"] * 12
        evaluated = {t.ncode for t in study.history}
    with sqlite3.connect(tmp_path / "known.db") as db:
        dropped = [json.loads(text) for (text,) in db.execute("SELECT dropped FROM decisions ORDER BY iteration")]
    drops = [pair for step in dropped for pair in step]
    assert drops and all(reason.startswith("params = ") and "breaks params<=5000" in reason for _, reason in drops)
    assert not {code for code, _ in drops} & evaluated, "a dropped configuration is never trained"
    assert main(["show", "k", "--db", str(tmp_path / "known.db"), "--decisions", "12"]) == 0
    distinct, out = len({code for code, _ in drops}), capsys.readouterr().out
    assert f"{distinct} configuration(s) dropped before evaluation in {sum(map(bool, dropped))} step(s)" in out
    assert any(f"{len(step)} drawn and dropped" in out for step in dropped if step), "and per decision"
    with Study.load(tmp_path / "known.db", "k") as study:
        assert study.config.known_before == ["tests.agent.objectives:parameter_count"]
        study.optimize(budget=14)
        assert [t.status for t in study.history] == ["ok"] * 14
    with pytest.raises(ConfigError, match=r"known_before= got .*<lambda>.* another process cannot import"):
        create("lambda", known_before=[lambda config: {"params": 1}])


def test_an_objective_that_never_returns_a_needed_value_stops_the_study_after_three(tmp_path):
    """accuracy returns no 'params': every trial of a study of both would fail alike, so optimize stops after three
    with one line naming it; the objective fixed, the study goes on from there."""
    with Study.create(tmp_path / "s.db", SPACE, objectives.accuracy, metric=["acc", "params"], maximize=[True, False],
                      run_id="s", ranker="random", budget=6) as study:  # fmt: skip
        with pytest.raises(EvaluatorSetupError, match="reported nothing under 'params'"):
            study.optimize()
        assert [t.status for t in study.history] == ["failed"] * 3
    with Study.load(tmp_path / "s.db", "s", objectives.accuracy_and_size) as study:
        study.optimize()
        assert [t.status for t in study.history] == ["failed"] * 3 + ["ok"] * 3


def test_a_limit_random_draws_never_keep_is_searched_by_repairing_the_draws(tmp_path, caplog, capsys):
    """24 ranks under a size limit 4.6 standard deviations below a random draw's: no pool of random codes and
    mutations holds one inside, so the drawn codes are walked inside (their size known before), and nothing over
    the limit is trained. Each decision keeps which dropped draw each pool code was walked from, and `show` says
    so. The control, without the size known before, trains every draw and records it infeasible."""

    def create(name: str, **options) -> Study:
        return Study.create(
            tmp_path / f"{name}.db", objectives.RANKS_SPACE, objectives.rank_quality, metric=["quality", "params"],
            maximize=[True, False], constraints=["params<=110"], run_id="r", ranker="random", budget=6, **options,
        )  # fmt: skip

    with create("control") as study:
        study.optimize()
        assert [t.status for t in study.history] == ["infeasible"] * 6
    with create("known", known_before=[objectives.rank_parameters]) as study:
        study.optimize()
        assert [t.status for t in study.history] == ["ok"] * 6
        sizes = [t.values[1] for t in study.history]
        assert max(sizes) <= 110 and min(sizes) > 96, "inside, and not collapsed to the smallest code (96)"
        assert len({t.ncode for t in study.history}) == 6
        walked = [t.ncode for t in study.history]
    assert "evaluating proposals as they come" not in caplog.text
    with sqlite3.connect(tmp_path / "known.db") as db:
        steps = [(json.loads(pool), json.loads(dropped), json.loads(repaired)) for pool, dropped, repaired in
                 db.execute("SELECT pool, dropped, repaired FROM decisions ORDER BY iteration")]  # fmt: skip
    for pool, dropped, repaired in steps:
        assert [code for _, code in repaired] == pool, "every pool code was walked inside, none drawn as it is"
        assert {source for source, _ in repaired} <= {code for code, _ in dropped}, "each from a dropped draw"
    assert main(["show", "r", "--db", str(tmp_path / "known.db"), "--decisions", "6"]) == 0
    out = capsys.readouterr().out
    assert "pool code(s) walked inside the constraints from them" in out
    assert "*: 10 walked" in out, "each decision says how many pool codes were walked inside"
    assert f"{steps[0][0][0]}*" in out, "the pool marks each walked code"
    with create("resumed", known_before=[objectives.rank_parameters]) as study:
        study.optimize(budget=3)
    with Study.load(tmp_path / "resumed.db", "r") as study:
        study.optimize(budget=6)
        assert [t.ncode for t in study.history] == walked, "walks are drawn from the step's seed: a resume repeats them"


def test_the_default_scalarisation_is_epsilon_where_the_other_objectives_are_known_before_and_fronts_elsewhere(
    tmp_path,
):
    """``auto`` reads a front member's box where the pool can be kept inside it (params known before, here through
    parameter_count) and the non-dominated layers elsewhere: each choice equals the named rule's, and the two rules
    choose differently here (so the comparison can fail)."""

    def codes(name: str, **options) -> list[str]:
        with create_two_objective_study(tmp_path / f"{name}.db", budget=16, seed=4, **options) as study:
            study.optimize()
            return [t.ncode for t in study.history]

    known = {"known_before": [objectives.parameter_count]}
    assert codes("auto") == codes("fronts", scalarisation="fronts")
    auto_known = codes("auto-known", **known)
    assert auto_known == codes("epsilon-known", scalarisation="epsilon", **known)
    assert auto_known != codes("fronts-known", scalarisation="fronts", **known)


@pytest.mark.parametrize("ranker", ["random", "nsga2", "tpe"])
def test_the_default_scalarisation_leaves_the_baselines_that_read_every_objective_or_none_as_users_know_them(
    tmp_path, ranker
):
    """Random search, NSGA-II and TPE read no scalarisation, so ``auto`` draws them no box to keep their pools in,
    even where the other objectives are known before (an explicit ``epsilon`` does: the control)."""

    def codes(name: str, **options) -> list[str]:
        options = {"known_before": [objectives.parameter_count], "ranker": ranker, **options}
        with create_two_objective_study(tmp_path / f"{name}.db", budget=24, seed=1, **options) as study:
            study.optimize()
            return [t.ncode for t in study.history]

    auto = codes("auto")
    assert auto == codes("fronts", scalarisation="fronts")
    assert auto != codes("epsilon", scalarisation="epsilon")


def test_directions_must_match_the_objectives(tmp_path):
    with pytest.raises(ConfigError, match="names 2 objectives but maximize= gives 3 directions"):
        Study.create(tmp_path / "s.db", SPACE, metric=["acc", "params"], maximize=[True, False, True])


def test_creating_a_study_that_exists_names_study_load_or_loads_it_when_asked(tmp_path):
    db = tmp_path / "s.db"
    with Study.create(db, SPACE, objectives.accuracy, ranker="random", budget=3, run_id="s") as study:
        study.optimize()
    with pytest.raises(SearchError, match=r"continue it with Study\.load\(.*'s'\), or pass load_if_exists=True"):
        Study.create(db, SPACE, objectives.accuracy, ranker="random", budget=3, run_id="s")
    with Study.create(db, SPACE, objectives.accuracy, run_id="s", load_if_exists=True, budget=5) as study:
        assert len(study.history) == 3, "the run that exists, as it is"
        study.optimize(budget=5)
        assert len(study.history) == 5
