"""NAS-Bench-Graph through the nas-bench-graph package (its data ships in the wheel)."""

from __future__ import annotations

import functools
import itertools

import pytest
from nas_bench_graph import Arch

from evaluators.nas_bench_graph import NBG_DATASETS, NasBenchGraphEvaluator
from evaluators.registry import TaskOptions, make_evaluator
from tools.evaluator import EvaluatorSetupError
from tools.ncode import decode, from_indices, is_valid, normalize
from tools.spaces import NBG_OPS_PROTEINS, nas_bench_graph_space


@functools.cache
def canonical_codes(dataset: str) -> frozenset[str]:
    """Every code of the space, normalized, deduplicated, valid."""
    space = nas_bench_graph_space(dataset)
    codes = {
        normalize(space, from_indices(indices))
        for indices in itertools.product(*(range(len(slot.options)) for slot in space.slots))
    }
    return frozenset(code for code in codes if is_valid(space, code))


def table_hash(evaluator: NasBenchGraphEvaluator, code: str):
    config = decode(evaluator.space, code)
    return Arch([int(c) for c in config["links"]], [config[f"op_{i}"] for i in range(4)]).valid_hash()


@pytest.mark.parametrize(("dataset", "expected"), [("cora", 26206), ("proteins", 2021)])
def test_every_canonical_code_evaluates(dataset, expected):
    evaluator = NasBenchGraphEvaluator(dataset)
    codes = canonical_codes(dataset)
    assert len(codes) == expected
    assert len(evaluator.table) == expected
    hashes = set()
    for code in codes:
        outcome = evaluator.evaluate(code)
        assert outcome.status == "ok"
        assert 0.0 <= outcome.score <= 1.0
        assert outcome.metrics["latency_s"] >= 0
        hashes.add(table_hash(evaluator, code))
    assert hashes == set(evaluator.table)  # canonical codes and table rows correspond one to one


def test_final_metrics():
    evaluator = NasBenchGraphEvaluator("cora")
    code = sorted(canonical_codes("cora"))[100]
    final = evaluator.final_metrics(code)
    assert set(final) == {"test_acc", "params_m"}
    assert 0.0 <= final["test_acc"] <= 1.0
    assert final["params_m"] > 0


def test_non_canonical_code_scores_like_its_canonical_code():
    evaluator = NasBenchGraphEvaluator("cora")
    space = evaluator.space
    for indices in [(0, 0, 1, 2, 3), (8, 3, 3, 1, 8), (4, 8, 0, 5, 1)]:
        code = from_indices(indices)
        assert evaluator.evaluate(code).score == evaluator.evaluate(normalize(space, code)).score


def test_proteins_has_its_own_five_op_space():
    evaluator = NasBenchGraphEvaluator("proteins")
    assert evaluator.space.slots[1].options == NBG_OPS_PROTEINS == ("gcn", "sage", "arma", "fc", "skip")
    assert not is_valid(evaluator.space, "05555")  # op 5 exists for cora, not for proteins
    assert is_valid(nas_bench_graph_space("cora"), normalize(nas_bench_graph_space("cora"), "05555"))
    cora = NasBenchGraphEvaluator("cora")
    assert cora.evaluate("00000").score != evaluator.evaluate("00000").score  # gat vs gcn, other data


def test_registry_defaults_to_cora():
    evaluator = make_evaluator("nas_bench_graph", TaskOptions())
    assert evaluator.dataset == "cora"
    assert evaluator.metric.maximize


def test_unknown_dataset_lists_valid_ones():
    with pytest.raises(EvaluatorSetupError) as info:
        NasBenchGraphEvaluator("reddit")
    message = str(info.value)
    assert "'reddit'" in message
    for dataset in NBG_DATASETS:
        assert dataset in message


def test_unknown_task_lists_valid_tasks():
    with pytest.raises(EvaluatorSetupError) as info:
        make_evaluator("nb101", TaskOptions())
    for task in ("nas_bench_graph", "nb201", "table"):
        assert task in str(info.value)


def test_parameters_and_latency_are_known_before_evaluating() -> None:
    evaluator = NasBenchGraphEvaluator("cora")
    code = sorted(canonical_codes("cora"))[7]
    known, outcome = evaluator.known_before(code), evaluator.evaluate(code)
    assert known == {"params_m": evaluator.final_metrics(code)["params_m"], "latency_s": outcome.metrics["latency_s"]}
    assert known["params_m"] > 0 and known["latency_s"] > 0
