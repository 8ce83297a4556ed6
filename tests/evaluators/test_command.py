"""--task command: a command template per NCode, run for real under its supervisor.

The commands are a small Python script written into ``tmp_path`` and run with ``sys.executable``;
it records its arguments, folder and environment in ``seen.json`` in its working folder, then
prints a score, fails, or sleeps, as its first argument says.
"""

from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agent.workers import parallel
from evaluators import command
from evaluators.command import CommandEvaluator, parse_score
from evaluators.registry import TaskOptions, make_evaluator
from tests.processes import assert_sigkill_leaves_no_orphan, process_gone, wait_for
from tools.evaluator import EvaluatorSetupError, Outcome
from tools.evaluator_tool import run_evaluation

ROOT = Path(__file__).resolve().parents[2]
NASTY = 'it\'s "q" $(touch pwned) `touch pwned` ; touch pwned & {x}'

SCRIPT = """
import json, os, sys, time
mode, args = sys.argv[1], sys.argv[2:]
names = ("LMSEARCHER_NCODE", "CUDA_VISIBLE_DEVICES", "LMSEARCHER_WORKER_INDEX")
with open("seen.json", "w") as handle:
    json.dump({"args": args, "cwd": os.getcwd(), "env": {name: os.environ.get(name) for name in names}}, handle)
if mode == "kv":
    print("val_acc: 0.1")
    print("best_val_acc: 99")
    print(f"epoch 2 val_acc={float(args[0]) / 10} loss=1e-3")
elif mode == "json":
    print('{"val_acc": 0.2, "params_m": 1.5}')
    print(json.dumps({"val_acc": float(args[0]) / 100, "params_m": 3, "note": "x"}))
elif mode == "sleep":
    with open(sys.argv[2], "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(300)
elif mode == "fail":
    print("partial output")
    print("Traceback: boom", file=sys.stderr)
    sys.exit(3)
else:
    print("training finished")
"""


@pytest.fixture
def space(tmp_path: Path) -> str:
    path = tmp_path / "space.yaml"
    slots = [
        {"name": "depth", "options": [2, 4, 8]},
        {"name": "width", "options": [16, 32, 64]},
        {"name": "tag", "options": ["plain", "two words", NASTY]},
    ]
    path.write_text(yaml.safe_dump({"name": "toy", "slots": slots}))
    return str(path)


@pytest.fixture
def script(tmp_path: Path) -> str:
    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"


def make(space: str, template: str, tmp_path: Path, **kwargs) -> CommandEvaluator:
    return CommandEvaluator(space, template, "val_acc", workdir=str(tmp_path / "work"), **kwargs)


def seen(evaluator: CommandEvaluator, ncode: str) -> dict:
    return json.loads((evaluator.root / ncode / "seen.json").read_text())


def test_parse_score_both_forms_and_the_last_line_wins():
    lines = ["val_acc: 0.5", "best_val_acc: 9", "x.val_acc=7", "epoch 3 val_acc = 2.5e-1 loss: 3", "done"]
    assert parse_score(lines, "val_acc") == (0.25, {})
    assert parse_score([*lines, '{"val_acc": 0.75, "params": 3, "ok": true, "name": "a"}'], "val_acc") == (
        0.75,
        {"params": 3},
    )
    assert parse_score(['{"val_acc": 0.75, "params": 3}', "val_acc=-1"], "val_acc") == (-1.0, {})
    assert parse_score(['{"other": 1}', '{"val_acc": "high"}', "Val_acc: 3", "val_acc: 1.2.3"], "val_acc") is None
    assert str(parse_score(["val_acc: nan"], "val_acc")[0]) == "nan"  # then refused as not finite
    assert parse_score(["val_acc: 1 then val_acc: 2"], "val_acc") == (2.0, {})


def test_key_value_and_json_scores_from_a_real_command(space, script, tmp_path):
    evaluator = make(space, f"{script} kv {{depth}}", tmp_path)
    assert evaluator.evaluate("200") == Outcome(0.8, {"workdir": str(evaluator.root / "200")})
    evaluator = make(space, f"{script} json {{width}}", tmp_path, maximize=False)
    outcome = evaluator.evaluate("010")
    assert (outcome.score, outcome.metrics["params_m"], "note" in outcome.metrics) == (0.32, 3, False)
    assert not evaluator.metric.maximize


def test_slot_values_arrive_literally(space, script, tmp_path):
    evaluator = make(space, f"{script} kv {{depth}} {{tag}} {{tag}}x {{{{literal}}}}", tmp_path)
    for ncode, tag in (("001", "two words"), ("002", NASTY)):
        assert run_evaluation(evaluator, ncode).status == "ok"
        assert seen(evaluator, ncode)["args"] == ["2", tag, f"{tag}x", "{literal}"]
    assert not list(tmp_path.rglob("pwned"))


def test_each_code_runs_in_its_own_fresh_folder(space, script, tmp_path):
    evaluator = make(space, f"{script} kv {{depth}} {{ncode}} {{workdir}}", tmp_path)
    stale = evaluator.root / "100" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an interrupted attempt")
    for ncode in ("100", "210"):
        outcome = evaluator.evaluate(ncode)
        folder = evaluator.root / ncode
        record = seen(evaluator, ncode)
        assert record["cwd"] == str(folder) == outcome.metrics["workdir"]
        assert record["args"][1:] == [ncode, str(folder)]
        assert record["env"]["LMSEARCHER_NCODE"] == ncode
        assert "val_acc=" in (folder / "stdout.log").read_text()
    assert not stale.exists()


def test_timeout_kills_the_command(space, script, tmp_path):
    pid_file = tmp_path / "pid"
    evaluator = make(space, f"{script} sleep {shlex.quote(str(pid_file))}", tmp_path, timeout_s=1)
    started = time.monotonic()
    outcome = run_evaluation(evaluator, "000")
    assert time.monotonic() - started < 4
    assert outcome.status == "failed" and outcome.error.startswith("timed out after 1 s")
    assert wait_for(lambda: process_gone(int(pid_file.read_text())), 2)


def test_non_zero_exit_fails_with_the_output_tails(space, script, tmp_path):
    outcome = run_evaluation(make(space, f"{script} fail", tmp_path), "000")
    assert outcome.status == "failed" and outcome.score is None
    assert "exited with code 3" in outcome.error and "Traceback: boom" in outcome.error
    assert outcome.metrics["stdout_tail"] == "partial output\n"
    assert outcome.metrics["stderr_tail"] == "Traceback: boom\n"
    assert "boom" in (Path(outcome.metrics["workdir"]) / "stderr.log").read_text()


def test_no_score_fails_naming_both_forms(space, script, tmp_path):
    outcome = run_evaluation(make(space, f"{script} silent", tmp_path), "000")
    assert outcome.status == "failed"
    assert "'val_acc: NUMBER'" in outcome.error and '"val_acc" key' in outcome.error
    assert outcome.error.endswith("training finished\n")


def test_setup_errors_before_the_search(space, script, tmp_path, monkeypatch):
    with pytest.raises(EvaluatorSetupError, match=r"--space .*--command .*--metric"):
        make_evaluator("command", TaskOptions(space=space, metric="val_acc"))
    with pytest.raises(
        EvaluatorSetupError, match=r"unknown placeholder \{depht\}; valid placeholders: \{depth\}, \{width\}"
    ):
        make(space, f"{script} kv {{depht}}", tmp_path)
    with pytest.raises(EvaluatorSetupError, match=r"\{ncode\}, \{workdir\}, \{gpu\}"):
        make(space, f"{script} kv {{}}", tmp_path)
    with pytest.raises(EvaluatorSetupError, match="literal braces"):
        make(space, f"{script} kv {{depth", tmp_path)
    with pytest.raises(EvaluatorSetupError, match=r"\{tag\} cannot format"):
        make(space, f"{script} kv {{tag:.2f}}", tmp_path)
    with pytest.raises(EvaluatorSetupError, match=r"slot name\(s\) \['gpu'\] clash"):
        CommandEvaluator({"name": "inline", "slots": [{"name": "gpu", "options": [0, 1]}]}, "true", "val_acc")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(EvaluatorSetupError, match="declare --gpus"):
        make(space, f"{script} kv {{gpu}}", tmp_path)
    evaluator = make(space, f"{script} kv {{depth:03d}}", tmp_path)
    assert evaluator.render("200", tmp_path) == f"{script} kv 008"
    assert evaluator.resources == {"num_cpus": 1}
    assert evaluator.describe() == f"toy: val_acc (maximised) printed by `{shlex.split(script)[0]} ...`"


def test_gpus_are_shared_out_by_worker_index(space, script, tmp_path, monkeypatch):
    assert command.WORKER_INDEX_ENV == parallel.WORKER_INDEX_ENV
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    monkeypatch.setenv(command.WORKER_INDEX_ENV, "3")
    evaluator = make_evaluator(
        "command",
        TaskOptions(
            space=space, command=f"{script} kv {{depth}} {{gpu}}", metric="val_acc", workdir=str(tmp_path), gpus="0,1"
        ),
    )
    assert evaluator.resources == {"num_cpus": 1, "num_gpus": 1}
    evaluator.evaluate("100")
    record = seen(evaluator, "100")
    assert (record["args"][1], record["env"]["CUDA_VISIBLE_DEVICES"]) == ("1", "1")
    # No --gpus: the GPU Ray (or the user) made visible is passed through.
    evaluator = make(space, f"{script} kv {{depth}} {{gpu}}", tmp_path)
    evaluator.evaluate("100")
    assert seen(evaluator, "100")["args"][1] == "7" and evaluator.resources == {"num_cpus": 1}


def test_worker_processes_know_their_index(space, script, tmp_path):
    """Local workers are numbered by slot; a replacement takes the dead worker's number (and GPU)."""
    options = TaskOptions(
        space=space, command=f"{script} kv {{depth}}", metric="val_acc", workdir=str(tmp_path), gpus="a,b"
    )
    backend = parallel.LocalBackend(parallel.WorkerSpec("command", options), 2)
    try:
        for slot, ncode in ((0, "000"), (1, "100")):
            backend.start(slot, ncode)
        first = _all(backend, [0, 1])
        backend.replace(1)
        backend.start(1, "200")
        second = _all(backend, [1])
    finally:
        backend.close(set())
    env = {ncode: json.loads((tmp_path / ncode / "seen.json").read_text())["env"] for ncode in ("000", "100", "200")}
    assert [env[ncode]["LMSEARCHER_WORKER_INDEX"] for ncode in ("000", "100", "200")] == ["0", "1", "1"]
    assert [env[ncode]["CUDA_VISIBLE_DEVICES"] for ncode in ("000", "100", "200")] == ["a", "b", "b"]
    assert first[1].metrics["worker_pid"] != second[1].metrics["worker_pid"]


def _all(backend: parallel.LocalBackend, slots: list[int]) -> dict:
    results: dict = {}
    while len(results) < len(slots):
        results.update(backend.wait([slot for slot in slots if slot not in results], 30))
    return results


DRIVER = """
import sys
from evaluators.registry import TaskOptions
options = TaskOptions(space=sys.argv[1], command=sys.argv[2], metric="val_acc", workdir=sys.argv[3])
if sys.argv[4] == "driver":
    from evaluators.registry import make_evaluator
    make_evaluator("command", options).evaluate("000")
else:
    from agent.workers.parallel import WorkerSpec, make_pool
    list(make_pool("local", 1, WorkerSpec("command", options)).evaluate_all(["000"]))
"""


@pytest.mark.parametrize("where", ["driver", "worker"])
def test_killing_the_driver_with_sigkill_leaves_no_orphan(space, script, tmp_path, where):
    """Evaluating in the search process itself, or in a worker process (which a busy worker outlives)."""
    pid_file = tmp_path / "pid"
    template = f"{script} sleep {shlex.quote(str(pid_file))}"
    args = [sys.executable, "-c", DRIVER, space, template, str(tmp_path / "work"), where]
    assert_sigkill_leaves_no_orphan(args, pid_file, ROOT, "the command")


def test_a_search_through_the_cli_with_two_workers(script, tmp_path):
    db = tmp_path / "runs.db"
    space_file = tmp_path / "small.yaml"
    slots = [{"name": "depth", "options": [1, 2, 3]}, {"name": "width", "options": [16, 32, 64]}]
    space_file.write_text(yaml.safe_dump({"name": "small", "slots": slots}))
    flags = ["--task", "command", "--space", str(space_file), "--command", f"{script} json {{width}}"]
    flags += ["--metric", "val_acc", "--workdir", str(tmp_path / "work"), "--ranker", "evolution", "--budget", "6"]
    flags += ["--workers", "2", "--db", str(db), "--quiet"]
    result = subprocess.run([sys.executable, "main.py", *flags], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT ncode, status FROM evaluations").fetchall()
    assert len(rows) == 6 and len({ncode for ncode, _ in rows}) == 6
    assert {status for _, status in rows} == {"ok"}
    assert sorted(path.name for path in (tmp_path / "work").iterdir()) == sorted(ncode for ncode, _ in rows)


def test_a_command_that_never_prints_an_objective_stops_the_run_after_three_and_resumes_once_fixed(script, tmp_path):
    """A script that never prints an objective the run needs would fail every training alike: the run stops after
    three of them (two workers: a fourth may be in flight) with one line saying what to print, and once the command
    prints it, the resumed run goes on and finishes, the failed evaluations kept as they were."""
    db = tmp_path / "runs.db"
    space_file = tmp_path / "small.yaml"
    slots = [{"name": "depth", "options": [1, 2, 3]}, {"name": "width", "options": [16, 32, 64]}]
    space_file.write_text(yaml.safe_dump({"name": "small", "slots": slots}))
    flags = ["--task", "command", "--space", str(space_file), "--command", f"{script} json {{width}}"]
    flags += ["--metric", "val_acc", "--metric", "params:min", "--workdir", str(tmp_path / "work"), "--budget", "8"]
    flags += ["--ranker", "random", "--workers", "2", "--db", str(db), "--run-id", "r", "--quiet"]
    stopped = subprocess.run([sys.executable, "main.py", *flags], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 2, stopped.stderr
    assert "evaluations of this session all ended without a value the run needs" in stopped.stdout + stopped.stderr
    assert "reported nothing under 'params'" in stopped.stdout + stopped.stderr
    with sqlite3.connect(db) as connection:
        failed = connection.execute("SELECT ncode, status FROM evaluations ORDER BY id").fetchall()
    assert 3 <= len(failed) <= 4 and {status for _, status in failed} == {"failed"}
    (tmp_path / "train.py").write_text(SCRIPT.replace('"params_m": 3, "note"', '"params": 3, "note"'))
    resumed = subprocess.run(
        [sys.executable, "main.py", "--resume", "r", "--db", str(db), "--quiet"], cwd=ROOT, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT ncode, status FROM evaluations ORDER BY id").fetchall()
    assert rows[: len(failed)] == failed and len(rows) == 8 and {status for _, status in rows[len(failed) :]} == {"ok"}


# -- intermediate scores, read while the command runs -------------------------------------------

CURVE_SCRIPT = """
import json, os, signal, sys, time
pid_file, epochs, form = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(pid_file, "w") as handle:
    handle.write(str(os.getpid()))

def on_term(signum, frame):
    with open(pid_file + ".term", "w") as handle:
        handle.write("SIGTERM")
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
for epoch in range(1, epochs + 1):
    time.sleep(0.2)
    value = round(0.1 * epoch, 3)
    if form == "json":
        print(json.dumps({"epoch": epoch, "val_acc": value, "loss": 1 / epoch}), flush=True)
    else:
        print(f"Epoch {epoch}/{epochs} train_loss: 0.5 val_acc: {value}", flush=True)
print(f"val_acc: {value}", flush=True)
"""


@pytest.fixture
def curve_script(tmp_path: Path) -> str:
    path = tmp_path / "curve.py"
    path.write_text(CURVE_SCRIPT)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"


def test_parse_report_reads_the_step_beside_the_score():
    from evaluators.command import parse_report

    assert parse_report("epoch 3 val_acc: 0.71", "val_acc") == (3.0, 0.71)
    assert parse_report("Epoch 3/27 loss=1 val_acc=0.5", "val_acc") == (3.0, 0.5)
    assert parse_report("step=200 val_acc 0.2 val_acc: 0.4", "val_acc") == (200.0, 0.4)
    assert parse_report('{"step": 7, "val_acc": 0.25}', "val_acc") == (7.0, 0.25)
    assert parse_report("val_acc: 0.71", "val_acc") is None, "no step: a final score, not a report"
    assert parse_report("epoch 3 loss: 0.2", "val_acc") is None
    assert parse_report("epochs=3 val_acc: 0.1", "val_acc") is None


@pytest.mark.parametrize("form", ["text", "json"])
def test_a_running_command_reports_each_epoch_as_it_prints_it(space, curve_script, tmp_path, form):
    pid_file = tmp_path / "pid"
    evaluator = make(space, f"{curve_script} {shlex.quote(str(pid_file))} 4 {form}", tmp_path)
    seen_at: list[tuple[float, float, float]] = []
    started = time.monotonic()

    def decide(step: float, value: float) -> bool:
        seen_at.append((step, value, time.monotonic() - started))
        return False

    outcome = run_evaluation(evaluator, "000", decide=decide)
    assert (outcome.status, outcome.score, outcome.fidelity) == ("ok", 0.4, 4.0)
    assert [(step, value) for step, value, _ in seen_at] == [(1.0, 0.1), (2.0, 0.2), (3.0, 0.3), (4.0, 0.4)]
    assert seen_at[0][2] < seen_at[-1][2] - 0.3, "the first epoch was read while the command still ran"


def test_a_stopped_command_gets_sigterm_and_is_recorded_as_stopped(space, curve_script, tmp_path):
    pid_file = tmp_path / "pid"
    evaluator = make(space, f"{curve_script} {shlex.quote(str(pid_file))} 50 text", tmp_path)
    outcome = run_evaluation(evaluator, "000", decide=lambda step, value: step >= 2)
    assert (outcome.status, outcome.score, outcome.fidelity, outcome.error) == ("stopped", 0.2, 2.0, None)
    assert outcome.cost_s < 5, "stopped at epoch 2 of 50, not trained to the end"
    assert Path(str(pid_file) + ".term").read_text() == "SIGTERM", "the training got SIGTERM first"
    assert process_gone(int(pid_file.read_text()))
    assert "Epoch 5/" not in (evaluator.root / "000" / "stdout.log").read_text()


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace_period(space, tmp_path, monkeypatch):
    monkeypatch.setattr(command, "GRACE_S", 0.5)  # the evaluator's wait for the runner
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import os, signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
        "for epoch in range(1, 100):\n    print(f'epoch {epoch} val_acc: 0.1', flush=True)\n    time.sleep(0.1)\n"
    )
    pid_file = tmp_path / "pid"
    template = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {shlex.quote(str(pid_file))}"
    evaluator = make(space, template, tmp_path)
    started = time.monotonic()
    outcome = run_evaluation(evaluator, "000", decide=lambda step, value: True)
    assert outcome.status == "stopped"
    assert wait_for(lambda: process_gone(int(pid_file.read_text())), 15), "SIGKILL after the grace period"
    assert time.monotonic() - started < 20


def test_a_training_still_saving_after_sigterm_gets_its_grace_when_the_shell_ends_at_once(space, tmp_path):
    """`cmd; true` keeps the shell waiting, and SIGTERM ends a waiting shell at once: the training must still get
    its grace period to save (once, the group was killed as soon as the shell ended, mid-save)."""
    script = tmp_path / "saver.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "def on_term(signum, frame):\n    time.sleep(0.5)\n    open(sys.argv[1] + '.saved', 'w').write('saved')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\nopen(sys.argv[1], 'w').write(str(os.getpid()))\n"
        "for epoch in range(1, 100):\n    print(f'epoch {epoch} val_acc: 0.1', flush=True)\n    time.sleep(0.1)\n"
    )
    pid_file = tmp_path / "pid"
    template = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {shlex.quote(str(pid_file))}; true"
    outcome = run_evaluation(make(space, template, tmp_path), "000", decide=lambda step, value: step >= 2)
    assert outcome.status == "stopped"
    assert Path(str(pid_file) + ".saved").read_text() == "saved", "the training finished saving"
    assert process_gone(int(pid_file.read_text()))
