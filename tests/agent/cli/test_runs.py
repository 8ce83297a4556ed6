"""``runs``, ``show``, ``export`` and ``compare`` as a user meets them: readable results, one-line errors."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.cli.main import main

LONG_FLOAT = re.compile(r"\d\.\d{5,}")  # 91.60666665039064: more decimals than a score means


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two finished NAS-Bench-Graph runs (the task ships its table): TPE under an id with a slash, and evolution."""
    path = tmp_path_factory.mktemp("runs") / "searches.db"
    for run_id, ranker in (("team/tpe", "tpe"), ("evo", "evolution")):
        assert main(["--ranker", ranker, "--budget", "10", "--db", str(path), "--run-id", run_id, "--quiet"]) == 0
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file alone holds everything: copies are whole
    return path


@pytest.fixture
def db_copy(db: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(db, tmp_path / "copy.db"))


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's whole stderr, checked to be a single ``error:`` line."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def stored(db: Path, query: str, *args: object) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(query, args).fetchall()


# readable results ---------------------------------------------------------------------------------


def test_runs_names_the_chosen_ranker_and_rounds_scores(db, capsys):
    assert main(["runs", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "ranker" in out and "proposer" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert "tpe" in rows["team/tpe"] and "evolution" in rows["evo"] and "cora" in rows["evo"]
    assert "first" not in out and not LONG_FLOAT.search(out)


def test_show_names_the_search_and_decodes_the_best_configuration(db, capsys):
    assert main(["show", "team/tpe", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    cells = {}
    for line in out.splitlines():
        parts = [part.strip() for part in line.split("│")]
        if len(parts) == 4 and parts[1]:
            cells[parts[1]] = parts[2]
    assert (cells["task"], cells["dataset"], cells["ranker"], cells["proposer"]) == (
        "nas_bench_graph", "cora", "tpe", "tpe",
    )  # fmt: skip
    assert cells["fallback rate"] == "0.000" and cells["decisions"] == "10"  # a rate reads as one, even at 0
    assert "first" not in out and not LONG_FLOAT.search(out)
    ((ncode, config),) = stored(
        db, "SELECT e.ncode, e.config FROM runs r JOIN evaluations e ON e.run_id = r.run_id "
        "AND e.ncode = r.best_ncode WHERE r.run_id = 'team/tpe'"
    )  # fmt: skip
    assert f"(NCode {ncode})" in out
    for slot, value in json.loads(config).items():
        assert f"{slot} = {value}" in out
    assert re.search(r"test_acc of best\s+│ 0\.\d{4} ", out)  # final metrics are rounded too
    assert (db.parent / "team_tpe.png").is_file()  # the default plot: the run id's slash made safe


def test_show_lists_the_last_decisions(db, capsys):
    assert main(["show", "evo", "--db", str(db), "--decisions", "2"]) == 0
    out = capsys.readouterr().out
    assert "last 2 decisions" in out
    picked = stored(db, "SELECT iteration, chosen FROM decisions WHERE run_id = 'evo' ORDER BY iteration")
    for iteration, chosen in picked[-2:]:
        code = json.loads(chosen)[0]
        config = json.loads(stored(db, "SELECT config FROM evaluations WHERE run_id = 'evo' AND ncode = ?", code)[0][0])
        first_slot = next(iter(config))
        assert re.search(rf"│ {iteration}\s+│ {code}\s+│ {first_slot}={config[first_slot]}, ", out)  # decoded
    assert not re.search(rf"│ {picked[-3][0]}\s+│", out.split("last 2 decisions")[1])


def test_show_pairs_each_candidate_with_its_grade(db_copy, capsys):
    """A grade-format ranker answers once per candidate: each answer is shown beside its code."""
    from agent.runs.store import RunStore, open_connection
    from agent.strategies.rankers import Decision

    connection = open_connection(db_copy)
    decision = Decision(chosen=["33333"], raw_answer="2\n---\n8\n---\nperhaps")
    RunStore(connection).record_decision("evo", 99, "local", ["11111", "33333", "44444"], decision)
    connection.close()
    assert main(["show", "evo", "--db", str(db_copy), "--decisions", "1"]) == 0
    out = capsys.readouterr().out
    assert "11111 (2) 33333 (8) 44444 ('perhaps')" in out and "per candidate" in out


def test_show_says_which_picks_a_random_start_made(db_copy, capsys):
    from agent.runs.store import RunStore, open_connection
    from agent.strategies.rankers import RANDOM_START, Decision

    connection = open_connection(db_copy)
    RunStore(connection).record_decision("evo", 98, RANDOM_START, ["11111", "33333"], Decision(chosen=["33333"]))
    RunStore(connection).record_decision("evo", 99, "local", ["22222", "44444"], Decision(chosen=["44444"]))
    connection.close()
    assert main(["show", "evo", "--db", str(db_copy), "--decisions", "2"]) == 0
    rows = capsys.readouterr().out.split("last 2 decisions")[1]
    assert "random start: picked at random" in rows.split("│ 99 ")[0] and "random start" not in rows.split("│ 99 ")[1]


def test_export_csv_labels_rows_and_keeps_codes_as_text(db, tmp_path, capsys):
    out = tmp_path / "tpe.csv"
    assert main(["export", "team/tpe", "--db", str(db), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 10
    assert all(row["code"] == "c:" + row["ncode"] for row in rows)
    assert {(r["run_id"], r["task"], r["metric"], r["direction"]) for r in rows} == {
        ("team/tpe", "nas_bench_graph", "val_acc", "maximize")
    }


def test_the_progress_line_in_a_log_is_whole_and_labelled(tmp_path, capsys):
    """stderr captured is not a terminal, as in a log file: no 80-column cut, both times named."""
    db = tmp_path / "r.db"
    assert main(["--ranker", "random", "--budget", "3", "--db", str(db), "--run-id", "a-long-run-id" * 3]) == 0
    *_, line = [line for line in capsys.readouterr().err.splitlines() if line.startswith("searching")]
    assert "…" not in line and len(line) > 80 and line.startswith("searching 3/3 ")
    assert re.search(r"elapsed \d+:\d\d:\d\d remaining \d+:\d\d:\d\d$", line)


# one line instead of a traceback ------------------------------------------------------------------


def overwrite_from(path: Path, offset: int) -> bytes:
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(random.Random(0).randbytes(size - offset))
    return path.read_bytes()


@pytest.mark.parametrize(
    "command",
    [
        ["runs"],
        ["show", "evo"],
        ["export", "evo"],
        ["compare", "evo", "team/tpe"],
        ["--resume", "evo", "--budget", "12"],
        ["--ranker", "random", "--budget", "3"],
    ],
)
@pytest.mark.parametrize("offset", [4096, "three quarters"])
def test_a_corrupt_database_is_one_line_and_left_untouched(db_copy, capsys, command, offset):
    before = overwrite_from(db_copy, offset if isinstance(offset, int) else db_copy.stat().st_size * 3 // 4)
    assert main([*command, "--db", str(db_copy)]) == 2
    line = error_line(capsys)
    assert f"database {db_copy} is corrupt: " in line and "Restore it from a backup or pass another --db" in line
    assert db_copy.read_bytes() == before
    wal = db_copy.with_name(db_copy.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.parametrize("command", [["--ranker", "random", "--budget", "3"], ["--resume", "evo"]])
def test_a_database_path_through_a_file_is_one_line(tmp_path, capsys, command):
    (tmp_path / "somefile").write_text("mine")
    assert main([*command, "--db", str(tmp_path / "somefile" / "x.db")]) == 2
    assert "somefile is a file, not a folder; pass another --db" in error_line(capsys)
    assert (tmp_path / "somefile").read_text() == "mine"


def bad_outputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Paths that cannot be written, and what the error line says about each."""
    (tmp_path / "somefile").write_text("mine")
    (tmp_path / "folder").mkdir()
    paths = {
        "a folder": (tmp_path / "folder", "it is a folder; pass a file path such as"),
        "inside a file": (tmp_path / "somefile" / "out.x", "somefile is a file, not a folder"),
    }
    if Path("/dev/full").exists():
        paths["a full device"] = (Path("/dev/full"), "No space left on device")
    return paths


@pytest.mark.parametrize("kind", ["a folder", "inside a file", "a full device"])
@pytest.mark.parametrize("command", [["export", "evo", "--out"], ["show", "evo", "--plot"]])
def test_an_output_that_cannot_be_written_is_one_line(db, tmp_path, capsys, kind, command):
    paths = bad_outputs(tmp_path)
    if kind not in paths:
        pytest.skip("no /dev/full here")
    path, said = paths[kind]
    before = sorted(tmp_path.rglob("*"))
    assert main([*command[:2], "--db", str(db), command[2], str(path)]) == 2
    assert said in error_line(capsys)
    assert sorted(tmp_path.rglob("*")) == before and (tmp_path / "somefile").read_text() == "mine"
    assert not Path("/dev/full.png").exists()


@pytest.mark.parametrize(
    "command", [["export", "evo", "--out"], ["show", "evo", "--plot"], ["compare", "evo", "team/tpe", "--out"]]
)
def test_an_output_in_missing_folders_makes_them_as_db_and_bench_out_do(db, tmp_path, command):
    path = tmp_path / "new" / "deeper" / "out.png"
    assert main([*command[:-1], "--db", str(db), command[-1], str(path)]) == 0
    assert path.stat().st_size > 0


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` as a read-only disk: a read-only bind mount as root (chmod binds no root), else chmod."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    mount = folder.with_name(folder.name + "-ro")
    mount.mkdir()
    bound = subprocess.run(["mount", "--bind", str(folder), str(mount)], capture_output=True).returncode == 0
    if not bound:
        pytest.skip("root without the right to mount here: a read-only file cannot be made")
    try:
        assert subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)]).returncode == 0
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_reading_commands_read_a_database_on_a_read_only_disk(db_copy, capsys):
    before = db_copy.read_bytes()
    with read_only(db_copy.parent) as folder:
        copy = folder / db_copy.name
        with pytest.raises(OSError):
            (folder / "probe").write_text("x")
        assert main(["runs", "--db", str(copy)]) == 0 and "team/tpe" in capsys.readouterr().out
        assert main(["export", "evo", "--db", str(copy)]) == 0
        assert len(list(csv.DictReader(capsys.readouterr().out.splitlines()))) == 10
        assert main(["show", "evo", "--db", str(copy)]) == 0
        assert "trajectory plot: not written" in capsys.readouterr().out  # beside the database: read-only too
        plot = db_copy.parent.parent / "c.png"
        assert main(["compare", "evo", "team/tpe", "--db", str(copy), "--out", str(plot)]) == 0
    assert db_copy.read_bytes() == before


# compare ------------------------------------------------------------------------------------------


def table_task(folder: Path) -> list[str]:
    """A complete results table of 27 codes whose best acc is 10.0: a run of 27 evaluations finds it."""
    (folder / "space.yaml").write_text(
        "name: toy\nslots:\n" + "".join(f"  - {{name: s{i}, options: [a, b, c]}}\n" for i in range(3))
    )
    rows = [f"{'abc'[a]},{'abc'[b]},{'abc'[c]},{a * 3 + b + c}.0" for a in range(3) for b in range(3) for c in range(3)]
    (folder / "results.csv").write_text("s0,s1,s2,acc\n" + "\n".join(rows) + "\n")
    return ["--task", "table", "--space", str(folder / "space.yaml"), "--data", str(folder / "results.csv")]


def test_compare_plots_best_so_far_and_regret_to_the_table_optimum(tmp_path, capsys):
    db = tmp_path / "t.db"
    task = [*table_task(tmp_path), "--metric", "acc", "--db", str(db), "--quiet"]
    assert main([*task, "--ranker", "random", "--budget", "27", "--run-id", "all"]) == 0
    assert main([*task, "--ranker", "tpe", "--budget", "4", "--run-id", "few"]) == 0
    capsys.readouterr()
    assert main(["compare", "all", "few", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    plot = tmp_path / "compare_all_vs_few.png"
    assert f"comparison plot: {plot}" in out and plot.read_bytes().startswith(b"\x89PNG")
    all_row = next(line for line in out.splitlines() if line.startswith("│ all "))
    assert re.search(r"│ 10\.0000\s+│ 0\.0000\s+│ \d+ ", all_row)  # its regret reached 0: found at that evaluation
    assert main(["compare", "all", "few", "--db", str(db), "--optimum", "9"]) == 2
    assert "--optimum 9.0 is below the best score 10.0000 of run all" in error_line(capsys)


def test_compare_reads_runs_of_several_databases_as_db_colon_run(db, db_copy, tmp_path, capsys):
    out = tmp_path / "c.png"
    assert main(["compare", "evo", f"{db_copy}:evo", "--db", str(db), "--out", str(out)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│")]  # the header: ┃
    assert "".join(row.split("│")[1].strip() for row in rows) == f"{db}:evo{db_copy}:evo"  # ids folded, never cut
    assert out.read_bytes().startswith(b"\x89PNG")
    assert main(["compare", "evo", f"{tmp_path / 'none.db'}:evo", "--db", str(db)]) == 2  # not a file: a run id
    assert f"no run '{tmp_path / 'none.db'}:evo' in {db}" in error_line(capsys)


def test_compare_without_a_known_optimum_plots_best_so_far(db, tmp_path, capsys):
    out = tmp_path / "c.png"
    assert main(["compare", "evo", "team/tpe", "--db", str(db), "--out", str(out), "--optimum", "0.9"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert "evo" in capsys.readouterr().out


def test_compare_refuses_runs_of_different_tasks_and_unknown_runs(db_copy, tmp_path, capsys):
    task = [*table_task(tmp_path), "--metric", "acc", "--db", str(db_copy), "--quiet"]
    assert main([*task, "--ranker", "random", "--budget", "3", "--run-id", "table"]) == 0
    capsys.readouterr()
    assert main(["compare", "evo", "table", "--db", str(db_copy)]) == 2
    assert "compare runs of one task and dataset" in error_line(capsys)
    assert main(["compare", "evo", "nope", "--db", str(db_copy)]) == 2
    assert "no run 'nope'" in error_line(capsys)


def test_runs_never_cuts_a_run_id_in_a_log(tmp_path, capsys):
    """Ids are what users copy: out of a terminal the table folds a long one onto more lines, it never ends it with
    an ellipsis."""
    from agent.cli.main import main

    db, run_id = str(tmp_path / "s.db"), "a-very-long-run-id-" + "x" * 80
    assert main(["--ranker", "random", "--budget", "2", "--db", db, "--run-id", run_id, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["runs", "--db", db]) == 0
    shown = capsys.readouterr().out
    assert "…" not in shown
    assert run_id in "".join(line.strip("│ ").split("│")[0].strip() for line in shown.splitlines())


def test_show_decodes_the_best_configurations(tmp_path, capsys):
    from agent.cli.main import main

    space, table = tmp_path / "space.yaml", tmp_path / "t.csv"
    space.write_text("name: t\nslots:\n  - {name: depth, options: [2, 4]}\n  - {name: act, options: [relu, gelu]}\n")
    table.write_text("depth,act,acc\n2,relu,0.1\n2,gelu,0.2\n4,relu,0.3\n4,gelu,0.4\n")
    db = str(tmp_path / "s.db")
    assert main(["--task", "table", "--space", str(space), "--data", str(table), "--metric", "acc", "--ranker",
                 "random", "--budget", "4", "--db", db, "--run-id", "t", "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["show", "t", "--db", db]) == 0
    best = [line for line in capsys.readouterr().out.splitlines() if "│ 1 " in line and "0.4000" in line]
    assert best and "depth=4, act=gelu" in best[0]
