"""Training domains: the tables load from the shared folder (skipped when absent), codes are valid,
scores are the tables' own; NAS-Bench-Graph and synthetic landscapes; NB201 and bad specs refused."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from evaluators.nas_bench_graph import NasBenchGraphEvaluator
from finetune.domains import DomainError, load_domain
from tools.ncode import decode, is_valid

# spec -> (file, rows inside the JSON, score field)
TABLES = {
    "macro": ("nas_bench_macro_cifar10.json", lambda t: t, "mean_acc"),
    "channel": ("channel_bench_macro_resnet.json", lambda t: t, "mean"),
    "nb101": ("naslib_zc_nasbench101.json", lambda t: t["nasbench101"]["cifar10"], "val_accuracy"),
    "nb301": ("naslib_zc_nasbench301.json", lambda t: t["cifar10"], "val_accuracy"),
    "tb101:jigsaw": ("naslib_zc_transbench101_macro.json", lambda t: t["jigsaw"], "val_accuracy"),
}


def key_values(key: str) -> tuple[int, ...]:
    return tuple(int(v) for v in (key if key.isdigit() else re.findall(r"-?\d+", key)))


@pytest.mark.parametrize("spec", sorted(TABLES))
def test_table_domain_loads_with_valid_codes_and_the_tables_scores(spec, train_domains_dir: Path):
    name, rows_of, field = TABLES[spec]
    if not (train_domains_dir / name).is_file():
        pytest.skip(f"{name} not in {train_domains_dir}")
    rows = rows_of(json.loads((train_domains_dir / name).read_text()))
    [domain] = load_domain(spec, str(train_domains_dir))
    assert domain.codes is not None and len(domain.codes) == len(set(domain.codes))
    assert all(is_valid(domain.space, code) for code in domain.codes)
    assert sorted(domain.score(code) for code in domain.codes) == sorted(row[field] for row in rows.values())
    # Each code decodes to the varying positions of its row's key, and scores that row.
    by_values = {key_values(key): row[field] for key, row in rows.items()}
    positions = [int(slot.name[1:]) for slot in domain.space.slots]
    width = len(next(iter(by_values)))
    fixed = {i: next(iter(by_values))[i] for i in range(width) if i not in positions}
    for code in random.Random(0).sample(domain.codes, 50):
        chosen = decode(domain.space, code)
        values = tuple(chosen[f"p{i}"] if i in positions else fixed[i] for i in range(width))
        assert domain.score(code) == by_values[values]


def test_tb101_all_names_one_domain_per_task(train_domains_dir: Path):
    if not (train_domains_dir / "naslib_zc_transbench101_macro.json").is_file():
        pytest.skip("TransNAS-Bench-101 table absent")
    domains = load_domain("tb101:all", str(train_domains_dir))
    assert len(domains) >= 2 and all(d.name.startswith("tb101:") for d in domains)


def test_the_data_folder_may_be_the_shared_root_or_train_domains_itself(train_domains_dir: Path):
    if not (train_domains_dir / "nas_bench_macro_cifar10.json").is_file():
        pytest.skip("NAS-Bench-Macro table absent")
    [a] = load_domain("macro", str(train_domains_dir))
    [b] = load_domain("macro", str(train_domains_dir.parent))
    assert a.codes == b.codes


def test_nas_bench_graph_scores_are_the_benchmarks():
    [domain] = load_domain("nbg:citeseer")
    evaluator = NasBenchGraphEvaluator("citeseer")
    assert len(domain.codes) > 20000
    for code in random.Random(1).sample(domain.codes, 30):
        assert is_valid(domain.space, code)
        assert domain.score(code) == pytest.approx(float(evaluator.evaluate(code).score))


def test_synthetic_landscapes_are_deterministic_by_seed():
    first = load_domain("synthetic:5", seed=3)
    again = load_domain("synthetic:5", seed=3)
    other = load_domain("synthetic:5", seed=4)
    assert [d.name for d in first] == [d.name for d in again] != [d.name for d in other]
    code = "0" * first[0].space.length
    assert first[0].score(code) == again[0].score(code)
    assert all(d.codes is None for d in first)


def test_missing_table_folder_and_unknown_spec_are_clear_errors(tmp_path: Path):
    with pytest.raises(DomainError, match="not found"):
        load_domain("macro", str(tmp_path))
    with pytest.raises(DomainError, match="unknown domain"):
        load_domain("imagenet")
