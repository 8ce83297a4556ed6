"""HAT sub-transformers on a SuperTransformer trained here for a few sandwich steps (tiny sizes, CPU)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.driver import Search, SearchConfig
from evaluators.hat_mt import CACHE_ENV, HatMTEvaluator, synthetic_corpus
from evaluators.registry import TaskOptions, make_evaluator
from tests.evaluators.loop import reported
from tools.evaluator import EvaluatorSetupError
from tools.evaluator_tool import run_evaluation
from tools.ncode import is_valid

STEPS = 40  # enough to move the loss; the default (300) is for real searches
LARGEST = "115" + "21" * 6 + "211" * 6  # 640/640, 6 decoder layers, FFN 3072, 8 heads everywhere
SMALLEST = "0" * 33  # 512/512, 1 decoder layer, FFN 1024, 4 heads


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def trained(cache: Path) -> tuple[HatMTEvaluator, list[str]]:
    lines: list[str] = []
    evaluator = HatMTEvaluator(steps=STEPS, device="cpu", log=lines.append)
    return evaluator, lines


def test_the_supernet_trains_once_and_is_cached(trained, cache):
    evaluator, lines = trained
    assert any("training the SuperTransformer" in line for line in lines)
    assert evaluator.checkpoint.is_file()
    assert evaluator.checkpoint.parent == cache / "hat_mt"
    assert not list(evaluator.checkpoint.parent.glob(".supernet-*"))  # no temporary file left
    again: list[str] = []
    reused = HatMTEvaluator(steps=STEPS, device="cpu", log=again.append)
    assert again == []  # loaded from the cache, not retrained
    assert reused.evaluate(LARGEST).score == pytest.approx(evaluator.evaluate(LARGEST).score, abs=1e-5)
    # the sandwich steps taught the super-network something: well below a uniform guess
    assert evaluator.evaluate(LARGEST).score < math.log(len(evaluator.vocab)) - 0.5


def test_codes_decode_to_different_sub_transformers(trained):
    evaluator, _ = trained
    assert is_valid(evaluator.space, LARGEST) and is_valid(evaluator.space, SMALLEST)
    big, small = evaluator.evaluate(LARGEST), evaluator.evaluate(SMALLEST)
    assert big.status == small.status == "ok"
    assert big.metrics["params"] > 3 * small.metrics["params"]
    assert big.metrics["latency_ms"] > small.metrics["latency_ms"] > 0
    assert big.score != small.score
    assert evaluator.metric.name == "valid_loss" and not evaluator.metric.maximize


def test_over_the_latency_limit_is_infeasible_and_stays_so(trained):
    evaluator, _ = trained
    strict = HatMTEvaluator(steps=STEPS, device="cpu", latency_limit_ms=1e-6, log=lambda _: None)
    outcome = run_evaluation(strict, SMALLEST)
    assert outcome.status == "infeasible"
    assert outcome.score is None
    assert outcome.error.startswith("latency ") and "> limit 1e-06 ms" in outcome.error
    assert outcome.metrics["params"] > 0
    assert run_evaluation(evaluator, SMALLEST).status == "ok"  # the default 500 ms limit


def test_the_parameter_count_is_known_before_evaluating(trained):
    evaluator, _ = trained
    for code in (LARGEST, SMALLEST):
        assert evaluator.known_before(code) == {"params": evaluator.evaluate(code).metrics["params"]}


def test_bleu_is_in_the_final_metrics_only(trained):
    evaluator, _ = trained
    final = evaluator.final_metrics(LARGEST)
    assert 0.0 <= final["bleu"] <= 100.0
    assert final["params"] == evaluator.evaluate(LARGEST).metrics["params"]
    assert "bleu" not in evaluator.evaluate(LARGEST).metrics


def test_a_three_step_search_through_the_real_loop(trained, tmp_path):
    search = Search(tmp_path / "runs.db")
    try:
        result = search.start(SearchConfig(task="hat_mt", budget=3, ranker="random", steps=STEPS, device="cpu"))
        rows = list(search.store.evaluations(result.run_id))
    finally:
        search.close()
    assert result.status == "finished" and result.evaluations == 3
    assert all(row["status"] == "ok" for row in rows)
    assert result.best_score == min(row["score"] for row in rows)
    assert "bleu" in result.final_metrics


def test_eval_timeout_records_a_failure(trained):
    slow = HatMTEvaluator(steps=STEPS, device="cpu", eval_timeout=1e-9, log=lambda _: None)
    outcome = run_evaluation(slow, LARGEST)
    assert outcome.status == "failed"
    assert "TimeoutError" in outcome.error and "--eval-timeout" in outcome.error


def test_model_path_loads_a_saved_supernet(trained, tmp_path):
    evaluator, _ = trained
    loaded = make_evaluator("hat_mt", TaskOptions(model_path=str(evaluator.checkpoint), device="cpu"))
    assert loaded.evaluate(SMALLEST).score == pytest.approx(evaluator.evaluate(SMALLEST).score, abs=1e-5)
    with pytest.raises(EvaluatorSetupError, match="drop --hat-scale 8"):
        HatMTEvaluator(model_path=str(evaluator.checkpoint), scale=8)
    with pytest.raises(EvaluatorSetupError, match="does not exist"):
        HatMTEvaluator(model_path=str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(EvaluatorSetupError, match="not a hat_mt super-network checkpoint"):
        HatMTEvaluator(model_path=str(tmp_path / "junk.pt"))


def write_corpus(folder: Path, pairs: int = 24) -> Path:
    folder.mkdir()
    corpus = synthetic_corpus(train_pairs=pairs, valid_pairs=6, seed=7)
    for split, rows in (("train", corpus.train), ("valid", corpus.valid)):
        (folder / f"{split}.src").write_text("".join(" ".join(s) + "\n" for s, _ in rows))
        (folder / f"{split}.tgt").write_text("".join(" ".join(t) + "\n" for _, t in rows))
    return folder


def test_a_parallel_corpus_folder(cache, tmp_path):
    folder = write_corpus(tmp_path / "corpus")
    evaluator = HatMTEvaluator(data=str(folder), steps=3, device="cpu", log=lambda _: None)
    assert evaluator.corpus.name == str(folder.resolve())
    assert len(evaluator.corpus.valid) == 6
    assert evaluator.evaluate(SMALLEST).status == "ok"


def test_bad_inputs_are_setup_errors(cache, tmp_path):
    with pytest.raises(EvaluatorSetupError, match="is not a folder"):
        HatMTEvaluator(data=str(tmp_path / "nowhere"))
    folder = write_corpus(tmp_path / "corpus")
    (folder / "train.tgt").unlink()
    with pytest.raises(EvaluatorSetupError, match=r"train\.tgt is missing"):
        HatMTEvaluator(data=str(folder))
    (folder / "train.tgt").write_text("only one line\n")
    with pytest.raises(EvaluatorSetupError, match="aligned line by line"):
        HatMTEvaluator(data=str(folder))
    with pytest.raises(EvaluatorSetupError, match="--hat-scale 3"):
        HatMTEvaluator(scale=3, steps=1)
    with pytest.raises(EvaluatorSetupError, match="--latency-limit-ms"):
        HatMTEvaluator(latency_limit_ms=0)


def test_metric_names_are_exactly_what_a_result_reports(trained):
    """What a new run's objectives and constraints are checked against (agent.driver.metric_problem)."""
    evaluator, _ = trained
    assert reported(evaluator, SMALLEST) == evaluator.metric_names()
