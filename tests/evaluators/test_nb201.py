"""NAS-Bench-201 looked up from the public tables (skipped when they are absent)."""

from __future__ import annotations

import itertools
import json

import pytest

from evaluators.nb201 import NB201_FILES, NB201Evaluator, arch_string
from evaluators.registry import TaskOptions, make_evaluator
from tools.evaluator import EvaluatorSetupError
from tools.ncode import decode, from_indices, is_valid
from tools.spaces import nb201_space

README_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
ALL_CODES = [from_indices(indices) for indices in itertools.product(range(5), repeat=6)]


@pytest.fixture(scope="module")
def evaluators(nb201_dir):
    return {dataset: NB201Evaluator(dataset, str(nb201_dir)) for dataset in NB201_FILES}


def test_arch_string_of_a_hand_written_code():
    space = nb201_space()  # no table needed: arch_string works on the decoded config
    assert arch_string(decode(space, "333132")) == README_ARCH
    assert arch_string(decode(space, "012340")) == (
        "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"
    )


@pytest.mark.parametrize(
    ("dataset", "best_val"), [("cifar10", 91.607), ("cifar100", 73.493), ("imagenet16-120", 46.733)]
)
def test_scanning_every_code_finds_the_global_best_validation(evaluators, dataset, best_val):
    evaluator = evaluators[dataset]
    scores = {code: evaluator.evaluate(code).score for code in ALL_CODES}
    best = max(scores, key=scores.__getitem__)
    assert scores[best] == pytest.approx(best_val, abs=0.01)
    assert is_valid(evaluator.space, best)


def test_codes_map_one_to_one_onto_the_table(evaluators):
    space = evaluators["cifar10"].space
    strings = {arch_string(decode(space, code)) for code in ALL_CODES}
    assert len(strings) == 5**6
    for evaluator in evaluators.values():
        assert strings == set(evaluator.table)


def test_readme_architecture(evaluators):
    evaluator = evaluators["cifar10"]
    assert evaluator.table[README_ARCH]["val_acc_200"] == pytest.approx(91.6067, abs=1e-3)
    outcome = evaluator.evaluate("333132")
    assert outcome.status == "ok"
    assert outcome.score == pytest.approx(91.6067, abs=1e-3)
    assert evaluator.final_metrics("333132") == {"test_acc": pytest.approx(94.3733, abs=1e-3), "rank": 2}


def test_final_metrics_hold_test_accuracy_the_search_does_not_see(evaluators):
    evaluator = evaluators["cifar100"]
    for code in ("333132", "100010", "444444"):
        final = evaluator.final_metrics(code)
        assert set(final) == {"test_acc", "rank"}
        assert 0 < final["test_acc"] < 100
        assert final["test_acc"] == pytest.approx(
            evaluator.table[arch_string(decode(evaluator.space, code))]["test_acc_200"]
        )
        assert "test_acc" not in evaluator.evaluate(code).metrics


def test_datasets_have_different_tables(evaluators):
    scores = {dataset: evaluator.evaluate("333132").score for dataset, evaluator in evaluators.items()}
    assert len(set(scores.values())) == 3
    assert evaluators["cifar10"].metric.name == "val_acc"
    assert evaluators["cifar10"].metric.maximize


def test_registry_builds_nb201(nb201_dir):
    evaluator = make_evaluator("nb201", TaskOptions(dataset="cifar100", data=str(nb201_dir)))
    assert isinstance(evaluator, NB201Evaluator)
    assert evaluator.dataset == "cifar100"


def test_missing_folder_names_the_file_and_where_to_download(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(EvaluatorSetupError) as info:
        NB201Evaluator("cifar100", str(missing))
    message = str(info.value)
    assert "nasbench201_cifar100.json" in message
    assert str(missing) in message
    assert "github.com/mingkai-zheng/GENIUS" in message
    assert "LMSEARCHER_DATA" in message


def test_corrupt_table_is_a_setup_error(tmp_path):
    (tmp_path / "nasbench201_cifar10.json").write_text("{not json")
    with pytest.raises(EvaluatorSetupError, match="not a NAS-Bench-201 JSON table"):
        NB201Evaluator("cifar10", str(tmp_path))


def test_small_table_in_a_subfolder_is_found(tmp_path):
    (tmp_path / "nb201").mkdir()
    (tmp_path / "nb201" / "nasbench201_imagenet.json").write_text(
        json.dumps({README_ARCH: {"val_acc_200": 40.0, "test_acc_200": 41.0, "rank": 7}})
    )
    evaluator = NB201Evaluator("imagenet16-120", str(tmp_path))
    assert evaluator.evaluate("333132").score == 40.0
    assert evaluator.final_metrics("333132") == {"test_acc": 41.0, "rank": 7}


def test_unknown_dataset_lists_valid_ones(tmp_path):
    with pytest.raises(EvaluatorSetupError) as info:
        NB201Evaluator("mnist", str(tmp_path))
    message = str(info.value)
    assert "'mnist'" in message
    for dataset in ("cifar10", "cifar100", "imagenet16-120"):
        assert dataset in message
