"""The run store on a real SQLite file."""

from __future__ import annotations

import random
import sqlite3

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from agent.runs.store import Observation, RunStore, StoreError, open_connection
from agent.strategies.rankers import Decision
from tools.evaluator import Outcome


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "runs" / "search.db"  # the parent folder is created on first open


@pytest.fixture
def store(db_path):
    connection = open_connection(db_path)
    yield RunStore(connection)
    connection.close()


def new_run(store: RunStore, run_id: str = "r1", budget: int = 20) -> None:
    store.create_run(run_id, "nb201", "cifar10", "val_acc", True, budget, {"ranker": "random", "seed": 3})


def ok(score: float, **metrics) -> Outcome:
    return Outcome(score, metrics=metrics, cost_s=0.25)


# runs --------------------------------------------------------------------------------------------


def test_create_and_get_run(store):
    new_run(store)
    run = store.get_run("r1")
    assert run["run_id"] == "r1"
    assert run["status"] == "created"
    assert run["task"] == "nb201"
    assert run["dataset"] == "cifar10"
    assert run["metric"] == "val_acc"
    assert run["maximize"] == 1
    assert run["budget"] == 20
    assert run["config"] == {"ranker": "random", "seed": 3}
    assert run["n_evaluations"] == 0
    assert run["created_at"] == run["updated_at"]
    assert store.get_run("missing") is None


def test_run_ids_are_unique(store):
    new_run(store)
    with pytest.raises(sqlite3.IntegrityError):
        new_run(store)


def test_update_run(store):
    new_run(store)
    before = store.get_run("r1")
    store.update_run("r1", status="done", best_ncode="333132", best_score=91.6, n_evaluations=7)
    run = store.get_run("r1")
    assert (run["status"], run["best_ncode"], run["best_score"], run["n_evaluations"]) == ("done", "333132", 91.6, 7)
    assert run["updated_at"] >= before["updated_at"]
    assert run["created_at"] == before["created_at"]
    assert run["budget"] == 20


def test_list_runs_in_creation_order(store):
    for run_id in ("b", "a", "c"):
        new_run(store, run_id)
    assert [run["run_id"] for run in store.list_runs()] == ["b", "a", "c"]


# evaluations -------------------------------------------------------------------------------------


def test_add_has_count_evaluations(store):
    new_run(store)
    assert store.count_evaluations("r1") == 0
    assert not store.has_evaluation("r1", "333132")
    store.add_evaluation("r1", 0, 0, "333132", {"edge_1_0": "nor_conv_3x3"}, ok(91.6, latency=2))
    assert store.has_evaluation("r1", "333132")
    assert not store.has_evaluation("r1", "100010")
    assert store.count_evaluations("r1") == 1
    (row,) = store.evaluations("r1")
    assert row["ncode"] == "333132"
    assert row["config"] == {"edge_1_0": "nor_conv_3x3"}
    assert row["metrics"] == {"latency": 2}
    assert row["score"] == 91.6
    assert row["cost_s"] == 0.25
    assert row["status"] == "ok"
    assert row["error"] is None


def test_a_code_is_evaluated_once_per_run(store):
    new_run(store)
    store.add_evaluation("r1", 0, 0, "333132", {}, ok(91.6))
    with pytest.raises(sqlite3.IntegrityError):
        store.add_evaluation("r1", 1, 0, "333132", {}, ok(91.6))
    assert store.count_evaluations("r1") == 1


def test_observations_in_evaluation_order_with_failures(store):
    new_run(store)
    entries = [
        (0, "444444", ok(80.0)),
        (0, "100010", Outcome(None, status="failed", error="boom")),
        (1, "010001", ok(85.5)),
    ]
    for position, (iteration, code, outcome) in enumerate(entries):
        store.add_evaluation("r1", iteration, position, code, {}, outcome)
    rows = store.observations("r1")
    assert [observation for _, observation in rows] == [
        Observation(0, "444444", 80.0, "ok", 0.25),
        Observation(0, "100010", None, "failed", 0.0),
        Observation(1, "010001", 85.5, "ok", 0.25),
    ]
    # Reading on from a row id returns only the newer rows (the loop reads its history this way).
    assert [observation.ncode for _, observation in store.observations("r1", after_id=rows[0][0])] == [
        "100010",
        "010001",
    ]
    assert [row["error"] for row in store.evaluations("r1")] == [None, "boom", None]


def test_two_runs_share_one_file(db_path):
    connection = open_connection(db_path)
    store = RunStore(connection)
    new_run(store, "r1")
    new_run(store, "r2", budget=5)
    store.add_evaluation("r1", 0, 0, "333132", {}, ok(91.6))
    store.add_evaluation("r2", 0, 0, "333132", {}, ok(70.0))  # the same code in another run is fine
    store.add_evaluation("r2", 0, 1, "444444", {}, ok(60.0))
    store.record_decision("r1", 0, "first", ["333132"], Decision(chosen=["333132"]))
    connection.close()

    connection = open_connection(db_path)
    store = RunStore(connection)
    assert [run["run_id"] for run in store.list_runs()] == ["r1", "r2"]
    assert store.count_evaluations("r1") == 1
    assert store.count_evaluations("r2") == 2
    assert [o.score for _, o in store.observations("r1")] == [91.6]
    assert [o.ncode for _, o in store.observations("r2")] == ["333132", "444444"]
    assert store.get_run("r2")["budget"] == 5
    assert len(store.decisions("r1")) == 1
    assert store.decisions("r2") == []
    connection.close()


# decisions ---------------------------------------------------------------------------------------


def test_record_decision_upserts_one_row_per_iteration(store):
    new_run(store)
    store.record_decision("r1", 0, "llm", ["a", "b", "c"], Decision(chosen=["a"], raw_answer="first try"))
    store.record_decision("r1", 1, "llm", ["d", "e"], Decision(chosen=["e"]))
    store.record_decision(
        "r1", 0, "llm", ["x", "y"], Decision(chosen=["y"], raw_answer="second try", retries=2, fallback=True)
    )
    decisions = store.decisions("r1")
    assert [d["iteration"] for d in decisions] == [0, 1]
    first = decisions[0]
    assert first["pool"] == '["x", "y"]'
    assert first["chosen"] == '["y"]'
    assert first["raw_answer"] == "second try"
    assert first["retries"] == 2
    assert first["fallback"] == 1
    count = store.db.execute("SELECT COUNT(*) FROM decisions WHERE run_id = 'r1' AND iteration = 0").fetchone()[0]
    assert count == 1


# checkpoints -------------------------------------------------------------------------------------


def add_checkpoints(connection: sqlite3.Connection, thread: str, ids: list[str]) -> None:
    for checkpoint_id in ids:
        connection.execute(
            "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, type, checkpoint, metadata) "
            "VALUES (?, '', ?, 'msgpack', x'00', x'00')",
            [thread, checkpoint_id],
        )
        connection.execute(
            "INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, value) "
            "VALUES (?, '', ?, 'task', 0, 'pool', 'msgpack', x'00')",
            [thread, checkpoint_id],
        )


def checkpoint_ids(connection: sqlite3.Connection, table: str, thread: str) -> list[str]:
    query = f"SELECT checkpoint_id FROM {table} WHERE thread_id = ? ORDER BY checkpoint_id"
    return [row[0] for row in connection.execute(query, [thread])]


def test_prune_checkpoints_keeps_the_newest(db_path):
    connection = open_connection(db_path)
    store = RunStore(connection)
    store.prune_checkpoints("r1", keep=2)  # no LangGraph tables yet: nothing to do
    SqliteSaver(connection).setup()
    ids = [f"1f0-{i:04d}" for i in range(10)]
    add_checkpoints(connection, "r1", ids)
    add_checkpoints(connection, "r2", ids[:5])
    store.prune_checkpoints("r1", keep=3)
    assert checkpoint_ids(connection, "checkpoints", "r1") == ids[-3:]
    assert checkpoint_ids(connection, "writes", "r1") == ids[-3:]
    assert checkpoint_ids(connection, "checkpoints", "r2") == ids[:5]  # other runs untouched
    assert checkpoint_ids(connection, "writes", "r2") == ids[:5]
    store.prune_checkpoints("r1", keep=3)
    assert checkpoint_ids(connection, "checkpoints", "r1") == ids[-3:]
    connection.close()
    # a file with LangGraph's tables next to ours is still ours
    RunStore(open_connection(db_path)).db.conn.close()


# opening files -----------------------------------------------------------------------------------


def test_reopening_our_own_database(db_path):
    connection = open_connection(db_path)
    store = RunStore(connection)
    new_run(store)
    store.add_evaluation("r1", 0, 0, "333132", {}, ok(91.6))
    connection.close()
    connection = open_connection(db_path)
    store = RunStore(connection)  # creating the schema again is harmless
    assert store.get_run("r1")["status"] == "created"
    assert store.count_evaluations("r1") == 1
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


def test_refuses_a_file_that_is_not_sqlite_and_leaves_it_untouched(tmp_path):
    path = tmp_path / "notes.txt"
    content = b"These are my notes, not a database.\n" * 50
    path.write_bytes(content)
    with pytest.raises(StoreError) as info:
        open_connection(path)
    message = str(info.value)
    assert str(path) in message
    assert "untouched" in message
    assert "--db" in message
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_refuses_a_short_non_sqlite_file(tmp_path):
    path = tmp_path / "tiny.db"
    path.write_bytes(b"hello")
    with pytest.raises(StoreError, match="untouched"):
        open_connection(path)
    assert path.read_bytes() == b"hello"


def test_refuses_a_directory(tmp_path):
    with pytest.raises(StoreError, match="not a file"):
        open_connection(tmp_path)


def foreign_database(path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    connection.execute("INSERT INTO customers (name) VALUES ('Ada'), ('Grace')")
    connection.commit()
    connection.close()


def test_refuses_a_sqlite_database_of_another_program(tmp_path):
    path = tmp_path / "shop.db"
    foreign_database(path)
    with pytest.raises(StoreError) as info:
        open_connection(path)
    message = str(info.value)
    assert "another program" in message
    assert "customers" in message
    assert "untouched" in message
    connection = sqlite3.connect(path)
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"customers"}
    assert connection.execute("SELECT name FROM customers ORDER BY id").fetchall() == [("Ada",), ("Grace",)]
    connection.close()


def test_refuses_our_tables_mixed_with_foreign_ones(db_path):
    connection = open_connection(db_path)
    RunStore(connection)
    connection.execute("CREATE TABLE extra (x)")
    connection.close()
    with pytest.raises(StoreError, match="extra"):
        open_connection(db_path)


def test_a_refused_sqlite_database_keeps_its_bytes(tmp_path):
    path = tmp_path / "shop.db"
    foreign_database(path)
    before = path.read_bytes()
    with pytest.raises(StoreError):
        open_connection(path)
    assert path.read_bytes() == before


# damaged files ------------------------------------------------------------------------------------


def overwrite_from(path, offset: int) -> bytes:
    """Garbage over every byte from ``offset`` on, as a failing disk or a bad copy leaves a file."""
    size = path.stat().st_size
    assert size > offset
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(random.Random(1).randbytes(size - offset))
    return path.read_bytes()


def filled_database(path) -> None:
    connection = open_connection(path)
    store = RunStore(connection)
    new_run(store)
    for position in range(300):
        store.add_evaluation("r1", position, 0, f"{position:05d}", {"x": "y" * 200}, ok(0.5))
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()


@pytest.mark.parametrize("where", ["past the header", "in the last pages"])
def test_refuses_a_corrupt_database_and_leaves_it_untouched(db_path, where):
    """Pages past the first hold garbage: SQLite may open the file and read its schema, so every page is
    checked before anything is written."""
    filled_database(db_path)
    offset = 4096 if where == "past the header" else db_path.stat().st_size * 3 // 4
    before = overwrite_from(db_path, offset)
    with pytest.raises(StoreError) as info:
        open_connection(db_path)
    message = str(info.value)
    assert message.startswith(f"database {db_path} is corrupt: ")
    assert "restore it from a backup or pass another --db" in message.lower()
    assert db_path.read_bytes() == before


def test_a_folder_that_is_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "somefile").write_text("mine")
    with pytest.raises(StoreError, match="somefile is a file, not a folder; pass another --db"):
        open_connection(tmp_path / "somefile" / "x.db")
    assert (tmp_path / "somefile").read_text() == "mine"


def test_a_schema_1_file_gains_the_evaluation_record_of_schema_2_and_keeps_its_rows(db_path):
    store = RunStore(open_connection(db_path))
    new_run(store)
    store.add_evaluation("r1", 0, 0, "012", {}, ok(0.5))
    connection = store.db.conn
    connection.execute("DROP TABLE reports")
    connection.execute("ALTER TABLE evaluations DROP COLUMN fidelity")
    connection.execute("ALTER TABLE runs DROP COLUMN wall_s")
    connection.execute("UPDATE lmsearcher_meta SET value = '1' WHERE key = 'schema_version'")
    connection.close()

    store = RunStore(open_connection(db_path))
    assert store.db.execute("SELECT value FROM lmsearcher_meta").fetchone()[0] == "2"
    assert [o.score for _, o in store.observations("r1")] == [0.5]
    assert [o.fidelity for _, o in store.observations("r1")] == [None]
    store.add_report("r1", "101", 1, 0.25)
    store.add_evaluation("r1", 1, 0, "101", {}, Outcome(0.25, status="stopped", fidelity=1.0))
    assert store.curves("r1") == {"101": [(1.0, 0.25)]}
    assert store.observations("r1")[-1][1] == Observation(1, "101", 0.25, "stopped", 0.0, 1.0)
    store.db.conn.close()


def test_a_file_from_before_repairs_were_kept_gains_the_columns_and_reads_its_rows_as_unrepaired(db_path):
    from agent.runs.report import decision_rows, llm_call_summary

    store = RunStore(open_connection(db_path))
    new_run(store)
    store.record_decision(
        "r1", 0, "random", ["012"], Decision(chosen=["012"]), [("222", "params = 9 breaks params<=5")]
    )
    store.record_round("r1", 0, ["222"], ["012"], invalid=0, duplicates=0, topped_up=1)
    connection = store.db.conn
    for table in ("decisions", "collm_rounds"):
        connection.execute(f"ALTER TABLE {table} DROP COLUMN repaired")
    assert decision_rows(store.decisions("r1"))[0]["repaired"] == []
    assert llm_call_summary([], store.collm_rounds("r1"))["walked_inside_constraints"] == 0
    connection.close()

    store = RunStore(open_connection(db_path))
    store.record_decision("r1", 1, "random", ["011"], Decision(chosen=["011"]), [("221", "x")], [("221", "011")])
    rows = decision_rows(store.decisions("r1"))
    assert [row["repaired"] for row in rows] == [[], [("221", "011")]]
    assert [row["dropped"] for row in rows] == [[("222", "params = 9 breaks params<=5")], [("221", "x")]]
    store.db.conn.close()


def test_reports_of_an_evaluation_started_again_replace_the_old_ones(store):
    new_run(store)
    for step, value in ((1, 0.1), (2, 0.2)):
        store.add_report("r1", "000", step, value)
    store.clear_reports("r1", "000")
    store.add_report("r1", "000", 1, 0.15)
    store.add_report("r1", "111", 1, 0.3)
    assert store.curves("r1") == {"000": [(1.0, 0.15)], "111": [(1.0, 0.3)]}
    assert [row[1:] for row in store.reports("r1")] == [("000", 1.0, 0.15), ("111", 1.0, 0.3)]
