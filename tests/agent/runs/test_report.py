"""Reading runs back: the ranker's real name, decisions, exports readable by pandas, optima and plots."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from agent.config import SearchConfig
from agent.runs.report import (
    decision_rows,
    decision_summary,
    export_run,
    plot_comparison,
    regret,
    save_figure,
    search_method,
    table_optimum,
)
from agent.runs.store import RunStore, open_connection
from agent.strategies.rankers import Decision
from tools.evaluator import Outcome

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def store(tmp_path):
    connection = open_connection(tmp_path / "r.db")
    yield RunStore(connection)
    connection.close()


def add_run(store: RunStore, run_id: str = "r1", **config: object) -> None:
    stored = SearchConfig(**config).stored()  # type: ignore[arg-type]
    store.create_run(run_id, "nb201", "cifar10", "val_acc", True, 5, stored)


@pytest.mark.parametrize(
    ("config", "ranker", "proposer"),
    [
        ({"ranker": "tpe"}, "tpe", "tpe"),
        ({"ranker": "evolution"}, "evolution", "evolution"),
        ({}, "inprocess", "mixed"),
        ({"ranker": "nearest", "proposer": "portfolio"}, "nearest", "portfolio"),
        ({"ranker": "random"}, "random", "random"),
        ({"ranker": "llm", "model": "qwen", "proposer": "mutation"}, "llm qwen", "mutation"),
        ({"strategy": "collm", "model": "m", "generator_model": "g"}, "collm navigator m", "collm generator g"),
    ],
)
def test_search_method_names_what_the_user_chose(store, config, ranker, proposer):
    """The decisions table says ``first`` for TPE and evolution: the stored config says what was chosen."""
    add_run(store, **config)
    assert search_method(store.get_run("r1")) == {"ranker": ranker, "proposer": proposer}


@pytest.mark.parametrize(("ranker", "proposer"), [("inprocess", "mixed"), ("nearest", "mixed"), ("random", "random")])
def test_a_run_stored_without_its_proposer_keeps_the_pool_it_started_with(store, ranker, proposer):
    """Runs used to store no proposer, meaning the default of their day (the mixed pool); runs now store the
    proposer resolved, so that a later change of the default cannot change a resumed run."""
    assert SearchConfig(ranker=ranker).stored()["proposer"] == proposer
    stored = {**SearchConfig(ranker=ranker).stored(), "proposer": None}
    store.create_run("old", "nb201", "cifar10", "val_acc", True, 5, stored)
    assert search_method(store.get_run("old")) == {"ranker": ranker, "proposer": proposer}
    assert SearchConfig.from_stored(store.get_run("old")["config"]).proposer_name() == proposer


def test_decision_summary_leaves_the_internal_ranker_name_out(store):
    add_run(store, ranker="tpe")
    store.record_decision("r1", 0, "first", ["00000"], Decision(chosen=["00000"]))
    assert "ranker" not in decision_summary(store.decisions("r1"))


def test_decision_rows_pair_per_candidate_answers_with_their_codes(store):
    add_run(store)
    graded = Decision(chosen=["111111"], raw_answer="Grade: 3\n---\n7\n---\nno idea", prompt_tokens=9)
    store.record_decision("r1", 0, "local", ["000000", "111111", "222222"], graded)
    single = Decision(chosen=["333333"], raw_answer="333333 looks best")
    store.record_decision("r1", 1, "local", ["333333", "444444"], single)
    reasked = Decision(chosen=["555555"], raw_answer="x\n---\ny", retries=1, fallback=True)
    store.record_decision("r1", 2, "local", ["555555", "666666"], reasked)
    first, second, third = decision_rows(store.decisions("r1"))
    assert first["grades"] == {"000000": 3, "111111": 7, "222222": None}
    assert first["answers"]["222222"] == "no idea" and first["raw_answer"] is None
    assert second["grades"] == {} and second["raw_answer"] == "333333 looks best"
    assert second["pool"] == ["333333", "444444"] and second["chosen"] == ["333333"]
    assert third["grades"] == {} and third["fallback"] and third["retries"] == 1  # re-asked: answers unpaired


def add_evaluations(store: RunStore, codes: list[str]) -> None:
    for position, code in enumerate(codes):
        store.add_evaluation("r1", position, 0, code, {"slot": code}, Outcome(90.0 + position, metrics={"m": 1}))


def test_csv_export_keeps_codes_as_text_and_labels_every_row(store):
    add_run(store)
    add_evaluations(store, ["00667", "1e5", "nan"])
    rows = list(csv.DictReader(io.StringIO(export_run(store, "r1", "csv"))))
    assert [row["code"] for row in rows] == ["c:00667", "c:1e5", "c:nan"]
    assert [row["ncode"] for row in rows] == ["00667", "1e5", "nan"]
    assert {(r["run_id"], r["task"], r["dataset"], r["metric"], r["direction"]) for r in rows} == {
        ("r1", "nb201", "cifar10", "val_acc", "maximize")
    }
    assert json.loads(rows[0]["config"]) == {"slot": "00667"} and json.loads(rows[0]["metrics"]) == {"m": 1}


def test_csv_export_read_by_pandas_with_its_defaults(store, tmp_path):
    """pandas reads 00667 as 667, 1e5 as 100000.0 and nan as NaN; ``code`` survives, and dtype=str fixes ncode."""
    pandas = pytest.importorskip("pandas")
    add_run(store)
    add_evaluations(store, ["00667", "1e5", "nan"])
    path = tmp_path / "r1.csv"
    path.write_text(export_run(store, "r1", "csv"))
    frame = pandas.read_csv(path)
    assert [code.removeprefix("c:") for code in frame["code"]] == ["00667", "1e5", "nan"]
    assert list(frame["direction"]) == ["maximize"] * 3 and list(frame["run_id"]) == ["r1"] * 3
    as_text = pandas.read_csv(path, dtype={"ncode": str}, keep_default_na=False)
    assert list(as_text["ncode"]) == ["00667", "1e5", "nan"]


def test_json_export_holds_values_not_json_strings(store):
    add_run(store)
    add_evaluations(store, ["00667"])
    store.update_run("r1", final_metrics=json.dumps({"test_acc": 93.5}))
    store.record_decision("r1", 0, "local", ["00667", "11111"], Decision(chosen=["00667"]))
    store.record_llm_call("r1", 0, "collm-navigator", "nav", error="timeout")
    store.record_round("r1", 0, ["00667", "bad"], ["00667"], invalid=1, duplicates=0, topped_up=0)
    document = json.loads(export_run(store, "r1", "json"))
    assert document["run"]["final_metrics"] == {"test_acc": 93.5}
    assert document["run"]["config"]["ranker"] == "inprocess"
    assert document["decisions"][0]["pool"] == ["00667", "11111"] and document["decisions"][0]["chosen"] == ["00667"]
    assert document["collm_rounds"][0]["proposed"] == ["00667", "bad"]
    assert document["collm_rounds"][0]["chosen"] == ["00667"]
    assert document["evaluations"][0]["config"] == {"slot": "00667"}
    assert "known" not in document and "queued" not in document and "finals" not in document  # none in this run


def test_json_export_holds_the_warm_starts_and_the_final_stage(store):
    """What the run started from (known results, codes queued first) and its final stage travel with the export,
    so a JSON file alone says where a run's best came from."""
    add_run(store)
    add_evaluations(store, ["00667"])
    store.add_warm_starts("r1", [
        {"kind": "known", "source": "old.db:r0", "ncode": "11111", "config": {"slot": "11111"}, "score": 0.7,
         "status": "ok", "metrics": {"score": 0.7}},
        {"kind": "queued", "source": "enqueue", "ncode": "22222", "config": {"slot": "22222"}, "status": "queued"},
    ])  # fmt: skip
    for seed in (1, 2):
        store.add_final("r1", "00667", seed, 27.0, Outcome(0.9 + seed / 100, {"val_acc": 0.9 + seed / 100}, 3.0))
    document = json.loads(export_run(store, "r1", "json"))
    assert [(row["source"], row["ncode"], row["score"]) for row in document["known"]] == [("old.db:r0", "11111", 0.7)]
    assert document["known"][0]["config"] == {"slot": "11111"} and document["known"][0]["metrics"] == {"score": 0.7}
    assert [row["ncode"] for row in document["queued"]] == ["22222"]
    assert [(row["seed"], row["fidelity"], row["score"]) for row in document["finals"]] == [
        (1, 27.0, 0.91),
        (2, 27.0, 0.92),
    ]
    assert document["finals"][0]["metrics"] == {"val_acc": 0.91}


def write_table(folder: Path) -> SearchConfig:
    """Three slots of three options: 27 rows whose best acc is 10.0 (code 222) and best loss 0.5 (code 000)."""
    (folder / "space.yaml").write_text(
        "name: toy\nslots:\n" + "".join(f"  - {{name: s{i}, options: [a, b, c]}}\n" for i in range(3))
    )
    lines = ["s0,s1,s2,acc,loss"]
    for a in range(3):
        for b in range(3):
            for c in range(3):
                lines.append(f"{'abc'[a]},{'abc'[b]},{'abc'[c]},{a * 3 + b + c + 0.0},{a + b + c + 0.5}")
    (folder / "results.csv").write_text("\n".join(lines) + "\n")
    return SearchConfig(task="table", space=str(folder / "space.yaml"), data=str(folder / "results.csv"))


def test_table_optimum_reads_the_best_score_of_a_table(tmp_path):
    config = write_table(tmp_path)
    assert table_optimum(config.changed(metric="acc")) == 10.0
    assert table_optimum(config.changed(metric="loss", minimize=True)) == 0.5


def test_table_optimum_of_nb201_is_its_best_validation_accuracy(nb201_dir):
    config = SearchConfig(task="nb201", dataset="cifar10", data=str(nb201_dir))
    assert round(table_optimum(config), 4) == 91.6067


def test_tasks_that_compute_their_scores_have_no_known_optimum():
    assert table_optimum(SearchConfig(task="objective", objective="tests.agent.objectives:quadratic")) is None


def test_regret_per_direction():
    assert regret([None, 5.0, 8.0, 10.0], 10.0, maximize=True) == [None, 5.0, 2.0, 0.0]
    assert regret([3.0, 1.0], 0.5, maximize=False) == [2.5, 0.5]


@pytest.mark.parametrize("optima", [{}, {"a (tpe)": 10.0, "b (random)": 10.0}])
def test_plot_comparison_writes_a_png(tmp_path, optima):
    curves = {"a (tpe)": [None, 5.0, 8.0, 10.0], "b (random)": [4.0, 4.0, 6.0, 7.0]}
    path = plot_comparison(curves, "acc", True, optima, tmp_path / "c.png", "2 runs", "(given)")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_save_figure_writes_png_whatever_the_name_and_honours_known_formats(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure()
    assert save_figure(figure, tmp_path / "plot.out").read_bytes().startswith(PNG_MAGIC)
    assert save_figure(figure, tmp_path / "plot.svg").read_text().lstrip().startswith("<?xml")
    plt.close(figure)
