"""LMSearcherSearch in a real Ray Tune experiment with ASHA whose driver is killed mid-experiment, then restored
(agent/integrations/ray_tune.py); the driver runs as its own process, as a user's script does. The README's
example (tests/test_readme.py) checks an uninterrupted experiment and the ranker's decisions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.tune", reason="pip install .[distributed]")

ROOT = Path(__file__).resolve().parents[3]

DRIVER = """
import math, sys, time
from pathlib import Path
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from agent.integrations.ray_tune import LMSearcherSearch

PAUSE = float(sys.argv[3])  # pickled with train by value: Ray's workers have other argv


def train(config):
    final = -(math.log10(config["lr"]) + 3) ** 2 - 0.1 * abs(config["layers"] - 2) + 0.2 * (config["act"] == "gelu")
    for epoch in range(1, 5):
        time.sleep(PAUSE)
        tune.report({{"acc": final * (1 + 1 / epoch)}})

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
path = Path({path!r})
if sys.argv[1] == "restore":
    tuner = tune.Tuner.restore(str(path), trainable=train, resume_unfinished=True, resume_errored=True)
else:
    space = {{
        "lr": tune.loguniform(1e-5, 1e-1), "layers": tune.randint(1, 5), "act": tune.choice(["relu", "gelu", "tanh"]),
    }}
    tuner = tune.Tuner(
        train, param_space=space,
        tune_config=tune.TuneConfig(
            metric="acc", mode="max", search_alg=LMSearcherSearch(ranker=sys.argv[2], seed=0),
            scheduler=ASHAScheduler(max_t=4, grace_period=1), num_samples=6, max_concurrent_trials=2,
        ),
        run_config=tune.RunConfig(storage_path=str(path.parent), name=path.name, verbose=0),
    )
results = tuner.fit()
print("TRIALS", len(results), "ERRORS", len(results.errors), "BEST", results.get_best_result().config)
"""


def driver(tmp_path: Path, *args: str) -> list[str]:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(path=str(tmp_path / "results" / "exp")))
    return [sys.executable, str(script), *args]


def searcher_trials(tmp_path: Path) -> list:
    """The Optuna trials of the searcher as Ray Tune checkpointed it."""
    from agent.integrations.ray_tune import LMSearcherSearch

    searcher = LMSearcherSearch(ranker="random")
    searcher.restore_from_dir(str(tmp_path / "results" / "exp"))
    return searcher._ot_study.trials


def test_a_killed_driver_is_restored_and_finishes_every_trial_once(tmp_path):
    experiment = tmp_path / "results" / "exp"
    process = subprocess.Popen(
        driver(tmp_path, "new", "tpe", "0.4"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # at least two trials have reported: killed mid-experiment
        reported = [p for p in experiment.glob("*/result.json") if p.stat().st_size > 0] if experiment.exists() else []
        if len(reported) >= 2 or process.poll() is not None:
            break
        time.sleep(0.2)
    assert process.poll() is None, f"the experiment ended before it could be killed: {process.stderr.read()[-2000:]}"
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    process.wait(timeout=30)
    process.stderr.close()
    restored = subprocess.run(driver(tmp_path, "restore", "tpe", "0"), capture_output=True, text=True, timeout=600)
    assert restored.returncode == 0, restored.stderr[-3000:]
    assert "TRIALS 6 ERRORS 0" in restored.stdout
    trials = searcher_trials(tmp_path)
    assert len(trials) == 6 and len({tuple(sorted(t.params.items())) for t in trials}) == 6
