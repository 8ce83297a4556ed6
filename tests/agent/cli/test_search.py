"""The search command's options: derived from SearchConfig, read from run files, overridden by flags."""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas
import pytest
import yaml

from agent.cli.main import main
from agent.cli.search import parse_search
from agent.config import ConfigError, SearchConfig


def ncodes(db: Path, run_id: str) -> list[str]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT ncode FROM evaluations WHERE run_id = ? ORDER BY id", [run_id]).fetchall()
    return [code for (code,) in rows]


def test_every_config_field_is_a_flag_with_its_default():
    command = parse_search([])
    assert command.config == SearchConfig()
    assert command.given == {}


def test_training_flags_reach_the_task_options_only_when_given():
    command = parse_search(["--task", "sam_lora", "--steps", "3", "--device", "cpu", "--eval-timeout", "30"])
    assert command.given == {"task": "sam_lora", "steps": 3, "device": "cpu", "eval_timeout": 30.0}
    options = command.config.task_options()
    assert (options.steps, options.device, options.eval_timeout, options.model_path) == (3, "cpu", 30.0, None)


def test_run_file_is_read_and_flags_win(tmp_path):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump({"ranker": "evolution", "budget": 7, "pool-size": 5, "db": "x.db"}))
    command = parse_search(["--config", str(run_file), "--budget", "9"])
    assert (command.config.ranker, command.config.budget, command.config.pool_size) == ("evolution", 9, 5)
    assert command.db == Path("x.db")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("budgett: 3\n", "unknown option 'budgett'; did you mean budget"),
        ("budget: many\n", "--budget must be int, got 'many'"),
        ("- a list\n", "must be a mapping of options"),
        ("budget: [\n", "is not valid YAML"),
    ],
)
def test_bad_run_files_get_one_clear_line(tmp_path, capsys, content, message):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(content)
    assert main(["--config", str(run_file), "--db", str(tmp_path / "r.db")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.db").exists()


def test_missing_run_file(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read run file" in capsys.readouterr().err


@pytest.mark.parametrize("ranker", ["local-serch", "vllmx", "openai", "inprocessing:x"])
def test_a_misspelt_ranker_is_one_line_naming_the_valid_ones(tmp_path, capsys, ranker):
    """Names are matched before the colon: 'local-serch' is neither the local-search baseline nor a local model."""
    assert main(["--ranker", ranker, "--budget", "3", "--db", str(tmp_path / "r.db")]) == 2
    err = capsys.readouterr().err
    assert f"unknown ranker {ranker!r}" in err and "local-search" in err and "Traceback" not in err


def test_batch_larger_than_the_pool_is_refused(tmp_path, capsys):
    assert main(["--ranker", "random", "--batch", "12", "--pool-size", "10", "--db", str(tmp_path / "r.db")]) == 2
    assert "--batch 12 is larger than --pool-size 10" in capsys.readouterr().err


def test_config_check_names_the_option():
    with pytest.raises(ConfigError, match="--workers must be 1 to 1,000,000,000, got 0"):
        SearchConfig(workers=0).check()


def test_exported_run_file_repeats_the_run(tmp_path, capsys):
    db = tmp_path / "r.db"
    base = ["--ranker", "evolution", "--budget", "8", "--seed", "4", "--db", str(db), "--quiet"]
    assert main([*base, "--run-id", "first"]) == 0
    run_file = tmp_path / "first.yaml"
    assert main(["export", "first", "--db", str(db), "--format", "config", "--out", str(run_file)]) == 0
    written = yaml.safe_load(run_file.read_text())  # what differs from the defaults, and what the run is
    assert written == {"task": "nas_bench_graph", "ranker": "evolution", "budget": 8, "seed": 4}, written
    assert main(["--config", str(run_file), "--db", str(db), "--run-id", "again", "--quiet"]) == 0
    assert ncodes(db, "again") == ncodes(db, "first") and len(ncodes(db, "first")) == 8
    saved = tmp_path / "shown.yaml"
    assert main(["show", "first", "--db", str(db), "--save-config", str(saved), "--plot", str(tmp_path / "p.png")]) == 0
    assert yaml.safe_load(saved.read_text()) == yaml.safe_load(run_file.read_text())


def test_resume_refuses_options_it_would_ignore_and_extends_the_budget(tmp_path, capsys):
    db = tmp_path / "r.db"
    assert main(["--ranker", "evolution", "--budget", "6", "--db", str(db), "--run-id", "r", "--quiet"]) == 0
    assert main(["--resume", "r", "--db", str(db), "--ranker", "random"]) == 2
    assert "drop --ranker" in capsys.readouterr().err
    assert main(["--resume", "r", "--db", str(db), "--budget", "10", "--quiet"]) == 0
    summary = capsys.readouterr().out  # the whole run, and what this session added to it
    assert re.search(r"│ evaluations\s+│ 10 ", summary)
    assert re.search(r"│   this session\s+│ 4 \(resumed at 6\)", summary)
    assert re.search(r"│ wall time\s+│ [\d.]+ s this session, [\d.]+ s over all sessions", summary)
    assert main(["--ranker", "evolution", "--budget", "10", "--db", str(db), "--run-id", "whole", "--quiet"]) == 0
    assert ncodes(db, "r") == ncodes(db, "whole") and len(ncodes(db, "r")) == 10


def scores(db: Path, run_id: str) -> list[float]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT score FROM evaluations WHERE run_id = ? ORDER BY id", [run_id]).fetchall()
    return [score for (score,) in rows]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_target_stops_any_strategy_once_reached(tmp_path, workers):
    db = tmp_path / "r.db"
    base = ["--ranker", "evolution", "--budget", "40", "--seed", "2", "--db", str(db), "--quiet", "--workers", workers]
    assert main([*base, "--run-id", "whole"]) == 0
    whole = scores(db, "whole")
    target = max(whole[:10])
    reached_at = next(i for i, score in enumerate(whole) if score >= target)
    assert main([*base, "--run-id", "early", "--target", str(target)]) == 0
    early = scores(db, "early")
    assert max(early) >= target and len(early) < 40
    if workers == "1":  # synchronous: it stops right after the evaluation that reached the target
        assert early == whole[: reached_at + 1]


def test_metric_given_again_is_a_further_objective_and_constraints_repeat():
    command = parse_search(["--metric", "acc", "--metric", "latency_ms:min", "--metric", "params:min",
                            "--constraint", "params<=5e6", "--constraint", "flops<1e9"])  # fmt: skip
    config = command.config
    assert (config.metric, config.minimize, config.objectives) == ("acc", False, ["latency_ms:min", "params:min"])
    assert config.constraint == ["params<=5e6", "flops<1e9"]
    assert parse_search(["--metric", "loss:min"]).config.minimize is True
    with pytest.raises(ConfigError, match="--metric acc:max and --minimize disagree"):
        parse_search(["--metric", "acc:max", "--minimize"])


def test_a_two_objective_table_search_shows_and_exports_its_front(tmp_path, capsys):
    space, table = tmp_path / "space.yaml", tmp_path / "t.csv"
    space.write_text("name: t\nslots:\n  - {name: a, options: [1, 2, 3, 4]}\n  - {name: b, options: [1, 2, 3]}\n")
    table.write_text("a,b,acc,params\n" + "".join(
        f"{a},{b},{0.5 + 0.1 * a - 0.01 * b},{a * a * 10 + b}\n" for a in range(1, 5) for b in range(1, 4)
    ))  # fmt: skip
    db = tmp_path / "s.db"
    flags = [
        "--task",
        "table",
        "--space",
        str(space),
        "--data",
        str(table),
        "--metric",
        "acc",
        "--metric",
        "params:min",
        "--constraint",
        "params<=100",
        "--ranker",
        "random",
        "--budget",
        "12",
        "--db",
        str(db),
    ]
    assert main([*flags, "--run-id", "mo", "--quiet"]) == 0  # fmt: skip
    assert main(["show", "mo", "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    assert "Pareto front: 3 of 12 evaluations (3 infeasible, never on it)" in shown  # b = 1 for a = 1, 2, 3
    assert (tmp_path / "mo_pareto.png").stat().st_size > 0
    out = tmp_path / "mo.csv"
    assert main(["export", "mo", "--db", str(db), "--out", str(out)]) == 0
    frame = pandas.read_csv(out)  # as a user reads an export
    assert {"acc", "params", "pareto"} <= set(frame.columns)
    assert sorted(frame[frame.pareto].params) == [11, 41, 91]
    infeasible = frame[frame.status == "infeasible"]
    assert (infeasible.params > 100).all() and len(infeasible) == 3 and not infeasible.pareto.any()


def test_in_a_log_the_progress_line_is_printed_as_the_search_goes(tmp_path):
    """stderr not a terminal: a bar would only be drawn at exit, so whole lines are printed as evaluations end."""
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "main.py", "--ranker", "random", "--budget", "10", "--simulated-cost", "0.7",
         "--db", str(tmp_path / "s.db")], cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("searching ")]
    assert lines[0].startswith("searching 1/10 best ") and lines[-1].startswith("searching 10/10 best ")
    assert len(lines) >= 3, "printed while it ran (the first at once, then every 5 s), not once at the end"


@pytest.mark.parametrize(
    ("argv", "said"),
    [(["--budget", "100000000000000000000"], "--budget must be 1 to 1,000,000,000"),
     (["--eval-timeout", "-1"], "--eval-timeout must be a positive number of seconds")],
)  # fmt: skip
def test_bad_numbers_are_refused_before_a_database_is_made(tmp_path, capsys, argv, said):
    db = tmp_path / "s.db"
    assert main([*argv, "--db", str(db), "--quiet"]) == 2
    assert said in capsys.readouterr().err and not db.exists()


def test_an_empty_run_file_is_refused(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("# nothing yet\n")
    assert main(["--config", str(tmp_path / "run.yaml"), "--db", str(tmp_path / "s.db")]) == 2
    assert "is empty" in capsys.readouterr().err and not (tmp_path / "s.db").exists()


def test_resume_with_a_budget_below_the_run_changes_nothing(tmp_path, capsys):
    db = str(tmp_path / "s.db")
    assert main(["--ranker", "random", "--budget", "6", "--db", db, "--run-id", "r", "--quiet"]) == 0
    assert main(["--resume", "r", "--db", db, "--budget", "4"]) == 2
    assert "--budget 4 is below the 6 evaluations run 'r' already holds" in capsys.readouterr().err
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT budget, n_evaluations FROM runs").fetchone() == (6, 6)


def test_a_budget_larger_than_the_space_ends_saying_the_space_ran_out(tmp_path, capsys):
    space, table = tmp_path / "space.yaml", tmp_path / "t.csv"
    space.write_text("name: tiny\nslots:\n  - {name: a, options: [1, 2, 3]}\n")
    table.write_text("a,acc\n1,0.1\n2,0.2\n3,0.3\n")
    flags = ["--task", "table", "--space", str(space), "--data", str(table), "--metric", "acc", "--ranker", "random"]
    assert main([*flags, "--budget", "1000", "--db", str(tmp_path / "s.db"), "--quiet"]) == 0
    assert "no configuration was left to propose: space 'tiny' ran out after 3" in capsys.readouterr().out


def test_resume_accepts_the_flags_it_was_started_with_and_names_the_stored_value_of_one_that_differs(tmp_path, capsys):
    db = str(tmp_path / "s.db")
    assert main(["--ranker", "random", "--budget", "3", "--seed", "4", "--db", db, "--run-id", "r", "--quiet"]) == 0
    first = ncodes(Path(db), "r")
    assert main(["--resume", "r", "--db", db, "--ranker", "random", "--seed", "4", "--budget", "5", "--quiet"]) == 0
    assert ncodes(Path(db), "r")[:3] == first and len(ncodes(Path(db), "r")) == 5
    capsys.readouterr()
    assert main(["--resume", "r", "--db", db, "--seed", "9", "--budget", "7"]) == 2
    said = capsys.readouterr().err
    assert "(--seed 4); drop --seed" in said and len(ncodes(Path(db), "r")) == 5


def test_an_option_the_run_would_not_read_is_named_before_any_other_rule(tmp_path, capsys):
    assert main(["--ranker", "random", "--population", "5", "--db", str(tmp_path / "s.db")]) == 2
    said = capsys.readouterr().err
    assert "--population 5 applies to regularized evolution" in said and "sample-size" not in said


def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--ranker", "openai:gpt-4o"], "needs an API key in the environment variable OPENAI_API_KEY"),
        (["--ranker", "llm", "--model", "m", "--prompt-format", "grade"], "cannot reach the ranker at"),
        (["--strategy", "collm", "--model", "m"], "CoLLM-NAS navigator: cannot reach the navigator at"),
    ],
)
def test_an_llm_that_cannot_be_used_is_said_before_the_task_is_built(tmp_path, capsys, monkeypatch, flags, said):
    """A training task takes minutes to build: keys and endpoints are checked first."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("LMSEARCHER_API_KEY", raising=False)

    def built(*_: object) -> None:
        raise AssertionError("the task was built before the ranker was checked")

    monkeypatch.setattr("agent.driver.make_evaluator", built)
    url = ["--base-url", f"http://127.0.0.1:{closed_port()}/v1"] * (flags[1] != "openai:gpt-4o")
    db = tmp_path / "r.db"
    assert main([*flags, *url, "--task", "diffusion_lora", "--db", str(db), "--run-id", "r"]) == 2
    assert said in capsys.readouterr().err
    assert main(["runs", "--db", str(db)]) == 0 and "│ r " not in capsys.readouterr().out  # no run was made
