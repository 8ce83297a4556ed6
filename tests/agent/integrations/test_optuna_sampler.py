"""LMSearcherSampler inside real Optuna studies: SQLite storages, pruners, enqueued trials, two processes, and
optuna-dashboard's own server reading what it recorded (agent/integrations/optuna_sampler.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import urllib.request
import warnings
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pytest
from optuna.trial import TrialState

from agent.integrations.optuna_sampler import DECISION_KEY, LMSearcherSampler, slot_of
from agent.strategies.rankers import Decision, Ranker, RankRequest

ROOT = Path(__file__).resolve().parents[3]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def objective(trial: optuna.Trial) -> float:
    """A made-up loss over a categorical, a log float, an integer range and a stepped integer."""
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    depth = trial.suggest_int("depth", 1, 6)
    batch = trial.suggest_int("batch", 16, 512, step=16)
    act = trial.suggest_categorical("act", ["relu", "gelu", "tanh"])
    return (math.log10(lr) + 3) ** 2 + 0.1 * abs(depth - 3) + abs(batch - 128) / 512 + 0.2 * (act != "gelu")


def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.mark.parametrize("ranker", ["inprocess", "tpe", "gp", "random", "nearest-mean"])
def test_the_ranker_chooses_every_trial_after_the_first_and_never_a_configuration_twice(tmp_path, ranker):
    study = optuna.create_study(storage=storage(tmp_path), sampler=LMSearcherSampler(ranker, seed=1))
    study.optimize(objective, n_trials=14)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 14
    for trial in trials:
        for name, value in trial.params.items():
            assert trial.distributions[name]._contains(trial.distributions[name].to_internal_repr(value))
    # The first trial has no finished trial to take a space from (Optuna's RandomSampler picks it); every
    # later one is the ranker's pick, out of a pool of codes no earlier trial has.
    decisions = [t.user_attrs.get(DECISION_KEY) for t in trials]
    assert decisions[0] is None and all(d and d["ranker"] == ranker for d in decisions[1:])
    assert all(d["ncode"] in d["pool"] for d in decisions[1:])
    assert len({d["ncode"] for d in decisions[1:]}) == 13
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 14


class Recording(Ranker):
    """Picks the pool's first code and keeps what it was shown: the history the sampler built from the study."""

    name = "recording"

    def __init__(self) -> None:
        self.histories: list[list] = []

    def rank(self, request: RankRequest) -> Decision:
        self.histories.append([(o.ncode, o.score, o.status) for o in request.history])
        return Decision(request.pool[:1], request.pool)


def test_random_start_asks_the_ranker_only_once_the_study_has_that_many_finished_trials(tmp_path):
    ranker = Recording()
    sampler = LMSearcherSampler(ranker, seed=0, random_start=5)
    study = optuna.create_study(direction="minimize", storage=storage(tmp_path), sampler=sampler)
    study.optimize(objective, n_trials=9)
    assert [len(history) for history in ranker.histories] == [5, 6, 7, 8]
    decisions = [t.user_attrs.get(DECISION_KEY) for t in study.trials]
    assert [d["ranker"] for d in decisions[1:]] == ["random start"] * 4 + ["recording"] * 4  # trial 0: Optuna's


def test_finished_trials_are_the_history_pruned_at_their_last_report_and_enqueued_trials_keep_their_values(tmp_path):
    ranker = Recording()
    study = optuna.create_study(
        direction="minimize", storage=storage(tmp_path), sampler=LMSearcherSampler(ranker, seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )  # fmt: skip
    study.enqueue_trial({"lr": 1e-3, "depth": 3, "batch": 128, "act": "gelu"})
    study.enqueue_trial({"lr": 1e-1, "depth": 6, "batch": 512, "act": "relu"})

    def reporting(trial: optuna.Trial) -> float:
        loss = objective(trial)
        for step in range(1, 4):
            trial.report(loss * (1 + 1 / step), step)
            if trial.should_prune():
                raise optuna.TrialPruned
        if trial.params["act"] == "tanh":
            raise ValueError("diverged")  # a failed trial
        return loss

    study.optimize(reporting, n_trials=12, catch=(ValueError,))
    trials = study.trials
    assert trials[0].params == {"lr": 1e-3, "depth": 3, "batch": 128, "act": "gelu"}
    assert trials[1].params == {"lr": 1e-1, "depth": 6, "batch": 512, "act": "relu"}
    assert DECISION_KEY not in trials[1].user_attrs  # enqueued: the ranker was not asked
    states = {t.state for t in trials}
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    # What the ranker read at the last trial: every finished trial before it, as our searchers read results.
    shown = ranker.histories[-1]
    finished = [t for t in trials[:-1] if t.state.is_finished()]
    assert len(shown) == len(finished)
    for (code, score, status), trial in zip(shown, finished, strict=True):
        if DECISION_KEY in trial.user_attrs:  # a trial the ranker chose is read back as the code it chose
            assert code == trial.user_attrs[DECISION_KEY]["ncode"]
        if trial.state == TrialState.COMPLETE:
            assert (score, status) == (trial.value, "ok")
        elif trial.state == TrialState.PRUNED:
            assert (score, status) == (trial.intermediate_values[max(trial.intermediate_values)], "stopped")
        else:
            assert (score, status) == (None, "failed")
    # Slots in name order (act, batch, depth, lr): relu is option 0, 512 the 32nd multiple of 16 (symbol v),
    # depth 6 option 5, and 0.1 the last of lr's 8 levels.
    assert shown[1][0] == "0v57"


@pytest.mark.parametrize("infeasible_as", ["worst", "omit"])
def test_a_trial_over_a_constraint_it_sets_reads_as_infeasible_and_never_as_good(tmp_path, infeasible_as):
    """Optuna 5's ``trial.set_constraint``: a completed trial over its limit reaches the ranker as an infeasible
    result, with the worst finished score (or none), however good its own; Optuna's best trial stays feasible."""

    def constrained(trial: optuna.Trial) -> float:
        loss = objective(trial)
        trial.set_constraint("depth", trial.params["depth"] - 3)  # depth <= 3
        return loss

    ranker = Recording()
    sampler = LMSearcherSampler(ranker, seed=0, infeasible_as=infeasible_as)
    study = optuna.create_study(direction="minimize", storage=storage(tmp_path), sampler=sampler)
    study.optimize(constrained, n_trials=12)
    finished = study.trials[:-1]
    over = [t.params["depth"] > 3 for t in finished]
    assert any(over) and not all(over)
    worst = max(t.value for t, broke in zip(finished, over, strict=True) if not broke)
    for (_, score, status), trial, broke in zip(ranker.histories[-1], finished, over, strict=True):
        assert status == ("infeasible" if broke else "ok")
        assert score == ((worst if infeasible_as == "worst" else None) if broke else trial.value)
    assert study.best_trial.params["depth"] <= 3


def test_a_conditional_parameter_falls_back_to_random_sampling_with_a_warning(tmp_path):
    def conditional(trial: optuna.Trial) -> float:
        depth = trial.suggest_int("depth", 1, 3)
        width = sum(trial.suggest_int(f"width_{k}", 16, 64) for k in range(1, depth + 1))
        return width / depth

    study = optuna.create_study(storage=storage(tmp_path), sampler=LMSearcherSampler("tpe", seed=0))
    with pytest.warns(UserWarning, match=r"'width_[23]' is not in every finished trial.*RandomSampler"):
        study.optimize(conditional, n_trials=15)
    assert len(study.trials) == 15


def test_misuse_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown ranker 'nope'"):
        LMSearcherSampler("nope")
    with pytest.raises(ValueError, match="does not read budget"):
        LMSearcherSampler(budget=30)
    with pytest.raises(ValueError, match="levels must be 2 to 62"):
        LMSearcherSampler(levels=100)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=LMSearcherSampler("random"))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=1)
    with pytest.raises(ValueError, match="ranks for one objective"):
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=1)


def test_ranges_become_ordered_grids():
    lr = slot_of("lr", optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True), levels=4)
    assert lr.options == (1e-4, 1e-3, 1e-2, 1e-1) and lr.numeric.log
    assert slot_of("d", optuna.distributions.IntDistribution(1, 6), levels=4).options == (1, 2, 3, 4, 5, 6)
    wide = slot_of("n", optuna.distributions.IntDistribution(1, 1000, log=True), levels=4)
    assert wide.options == (1, 10, 100, 1000)
    stepped = slot_of("b", optuna.distributions.IntDistribution(16, 2048, step=16), levels=3)
    assert stepped.options == (16, 1040, 2048)  # 128 steps: 3 levels, each on the step
    assert slot_of("p", optuna.distributions.FloatDistribution(0, 0.5, step=0.1), levels=8).options == (
        0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5,
    )  # fmt: skip


WORKER = """
import math, sys, optuna
from agent.integrations.optuna_sampler import LMSearcherSampler
sys.path.insert(0, {root!r})
from tests.agent.integrations.test_optuna_sampler import objective
study = optuna.create_study(study_name="shared", storage={storage!r}, load_if_exists=True,
                            sampler=LMSearcherSampler("nearest-mean", seed=int(sys.argv[1])))
study.optimize(objective, n_trials=10)
"""


def test_two_processes_share_one_study_and_optuna_dashboard_serves_its_decisions(tmp_path):
    url = storage(tmp_path)
    optuna.create_study(study_name="shared", storage=url)  # created once, as a user would before starting workers
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT), storage=url))
    workers = [
        subprocess.Popen([sys.executable, str(script), str(seed)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for seed in (1, 2)
    ]
    try:
        for worker in workers:
            assert worker.wait(timeout=300) == 0, worker.stderr.read()[-2000:]
    finally:
        for worker in workers:
            worker.kill()
            worker.stderr.close()
    study = optuna.load_study(study_name="shared", storage=url)
    assert len(study.trials) == 20 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert sum(DECISION_KEY in t.user_attrs for t in study.trials) >= 17  # all but each process's first trials

    import optuna_dashboard

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(url), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/api/studies"
        (listed,) = json.load(urllib.request.urlopen(base, timeout=30))["study_summaries"]
        detail = json.load(urllib.request.urlopen(f"{base}/{listed['study_id']}?after=0", timeout=30))
    finally:
        server.shutdown()
        server.server_close()
    served = [t for t in detail["trials"] if any(a["key"] == DECISION_KEY for a in t["user_attrs"])]
    assert len(detail["trials"]) == 20 and len(served) >= 17
    assert {p["name"] for p in detail["trials"][0]["params"]} == {"lr", "depth", "batch", "act"}


def test_a_used_up_space_says_so_and_random_sampling_goes_on(tmp_path):
    study = optuna.create_study(storage=storage(tmp_path), sampler=LMSearcherSampler("random", seed=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study.optimize(lambda t: t.suggest_int("a", 0, 1) + t.suggest_int("b", 0, 1), n_trials=6)
    (said,) = [str(w.message) for w in caught if "LMSearcherSampler" in str(w.message)]  # said once, and only that
    assert "every code of the study's space has a trial" in said
    assert len(study.trials) == 6
    assert len({tuple(t.params.values()) for t in study.trials[:4]}) == 4  # the four codes, each once
