"""NAS-Bench-ASR from pickle files written here in the released format (a handful of architectures).

The released files (github.com/SamsungLabs/nb-asr/releases) cannot be downloaded in tests; the
fixture reproduces their layout: a header pickle then a rows pickle, training rows
``[model_hash, val_per (per epoch), test_per, arch_vec]``. The one hash written literally is the
one the NAS-Bench-ASR README prints for ``[[1,0], [1,0,0], [1,0,0,0]]``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from statistics import mean

import pytest

from agent.driver import Search, SearchConfig
from evaluators.nb_asr import NBASREvaluator, arch_vector, canonical_codes, model_hash
from evaluators.registry import TaskOptions, make_evaluator
from tools.evaluator import EvaluatorSetupError
from tools.ncode import decode, encode
from tools.spaces import NB_ASR_MAIN_OPS, nb_asr_space

README_VECTOR = [[1, 0], [1, 0, 0], [1, 0, 0, 0]]
README_HASH = "36855332a5778e0df5114305bc3ce238"  # printed in the NAS-Bench-ASR README
VECTORS = [
    README_VECTOR,
    [[4, 1], [3, 1, 0], [2, 0, 1, 1]],
    [[0, 0], [0, 0, 0], [0, 0, 0, 0]],
    [[2, 1], [2, 1, 1], [2, 1, 1, 1]],
    [[1, 1], [5, 0, 1], [3, 1, 0, 0]],  # a zero op: isomorphic to other vectors
    [[3, 0], [4, 1, 0], [1, 0, 0, 1]],
]
SEEDS = (1234, 1235)


def flat(vector: list[list[int]]) -> str:
    return "".join(str(d) for node in vector for d in node)


def val_curve(i: int, seed: int) -> list[float]:
    """Per-epoch validation PER; the best epoch is in the middle."""
    best = 0.20 + 0.01 * i + 0.001 * (seed - 1234)
    return [best + 0.3, best + 0.05, best, best + 0.02]


def test_per(i: int, seed: int) -> float:
    return 0.22 + 0.01 * i + 0.002 * (seed - 1234)


test_per.__test__ = False  # a helper, not a test


def write_pair(path: Path, header: dict, rows: list) -> None:
    with path.open("wb") as handle:
        pickle.dump(header, handle)
        pickle.dump(rows, handle)


def space_header() -> dict:
    return {"shape": [[6, 2], [6, 2, 2], [6, 2, 2, 2]], "ops": list(NB_ASR_MAIN_OPS), "nodes": 3}


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data") / "nb_asr"  # the layout of ../shared/data/nb_asr
    folder.mkdir()
    keys = [README_HASH if v is README_VECTOR else model_hash(v) for v in VECTORS]
    for seed in SEEDS:
        header = {
            "dataset_type": "training", "seed": seed, "epochs": 40, "version": 2, "search_space": space_header(),
            "columns": ["model_hash", "val_per", "test_per", "arch_vec"],
        }  # fmt: skip
        rows = [
            [key, val_curve(i, seed), test_per(i, seed), [tuple(n) for n in v]]
            for i, (key, v) in enumerate(zip(keys, VECTORS, strict=True))
        ]
        write_pair(folder / f"nb-asr-e40-{seed}.pickle", header, rows)
    bench = {"dataset_type": "benchmarking", "device": "gtx-1080ti-fp32", "version": 2, "search_space": space_header()}
    bench["columns"] = ["model_hash", "latency", "arch_vec"]
    write_pair(folder / "nb-asr-bench-gtx-1080ti-fp32.pickle", bench, [[k, 0.04 + i, None] for i, k in enumerate(keys)])
    info = {"dataset_type": "static", "version": 2, "columns": ["model_hash", "params", "flops", "arch_vec"]}
    write_pair(folder / "nb-asr-info.pickle", info, [[k, 1000 + i, 5000 + i, None] for i, k in enumerate(keys)])
    return folder


@pytest.fixture(scope="module")
def evaluator(bench_dir: Path) -> NBASREvaluator:
    return NBASREvaluator(str(bench_dir))


def test_hash_matches_the_published_benchmark_key():
    assert model_hash(README_VECTOR) == README_HASH
    space = nb_asr_space()
    assert arch_vector(space, "101001000") == README_VECTOR
    assert decode(space, "101001000")["main_1"] == "conv5"
    assert decode(space, "101001000")["skip_1_0"] == "zero"  # skip bit 0 = no connection


def test_the_space_holds_the_papers_8242_distinct_models():
    canonical = canonical_codes()
    assert len(canonical) == 8242
    space = nb_asr_space()
    assert all(model_hash(arch_vector(space, code)) == key for key, code in list(canonical.items())[:50])


def test_lookup_of_known_architectures_averages_seed_files(evaluator):
    for i, vector in enumerate(VECTORS):
        outcome = evaluator.evaluate(flat(vector))
        assert outcome.status == "ok"
        assert outcome.score == pytest.approx(mean(min(val_curve(i, s)) for s in SEEDS))
        assert outcome.metrics["seeds"] == 2
        assert outcome.metrics["params"] == 1000 + i
        assert outcome.metrics["latency_gtx-1080ti-fp32_s"] == pytest.approx(0.04 + i)
        assert "test_per" not in outcome.metrics
        final = evaluator.final_metrics(flat(vector))
        assert final["test_per"] == pytest.approx(mean(test_per(i, s) for s in SEEDS))
    assert evaluator.seeds == list(SEEDS)


def test_isomorphic_codes_share_one_row_and_one_member(evaluator):
    space = evaluator.space
    zero_vector = VECTORS[4]  # node 2 is 'zero': the skips leaving it change nothing
    twin = [list(n) for n in zero_vector]
    twin[2][3] = 1 - twin[2][3]  # the skip leaving node 2 (into node 3)
    assert model_hash(twin) == model_hash(zero_vector)
    assert evaluator.evaluate(flat(twin)).score == evaluator.evaluate(flat(zero_vector)).score
    assert len(space.members) == len(VECTORS)  # one code per model
    canonical = canonical_codes()[model_hash(zero_vector)]  # the first code of that model
    assert canonical in space.members
    assert canonical <= min(flat(twin), flat(zero_vector))
    assert evaluator.evaluate(canonical).score == evaluator.evaluate(flat(zero_vector)).score


def test_per_is_minimised(evaluator):
    assert evaluator.metric.name == "per"
    assert not evaluator.metric.maximize
    scores = {code: evaluator.evaluate(code).score for code in evaluator.space.members}
    best = max(scores, key=lambda code: evaluator.metric.utility(scores[code]))
    assert scores[best] == min(scores.values())
    assert best == flat(VECTORS[0])


def test_a_short_search_through_the_real_loop(bench_dir, tmp_path):
    search = Search(tmp_path / "runs.db")
    try:
        result = search.start(SearchConfig(task="nb_asr", budget=3, ranker="random", data=str(bench_dir)))
        rows = list(search.store.evaluations(result.run_id))
    finally:
        search.close()
    assert result.status == "finished"
    assert result.evaluations == 3
    assert all(row["status"] == "ok" for row in rows)
    assert result.best_score == min(row["score"] for row in rows)
    assert result.final_metrics["test_per"] > result.best_score


def test_registry_builds_nb_asr_from_a_subfolder(bench_dir):
    evaluator = make_evaluator("nb_asr", TaskOptions(data=str(bench_dir.parent), dataset="timit"))
    assert isinstance(evaluator, NBASREvaluator)
    assert evaluator.space.name == "nb_asr"
    assert len(evaluator.space.members) == len(VECTORS)


def test_missing_files_name_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(EvaluatorSetupError, match=r"nb-asr-e40-1234\.pickle.*github\.com/SamsungLabs/nb-asr"):
        NBASREvaluator(str(tmp_path))
    with pytest.raises(EvaluatorSetupError, match="nb-asr-e40-1234"):
        make_evaluator("nb_asr", TaskOptions(data=str(tmp_path / "nowhere")))


def test_malformed_files_are_setup_errors(tmp_path):
    (tmp_path / "nb-asr-e40-1234.pickle").write_bytes(b"not a pickle at all")
    with pytest.raises(EvaluatorSetupError, match="not a NAS-Bench-ASR pickle"):
        NBASREvaluator(str(tmp_path))
    write_pair(tmp_path / "nb-asr-e40-1234.pickle", {"dataset_type": "benchmarking", "columns": []}, [])
    with pytest.raises(EvaluatorSetupError, match="not a NAS-Bench-ASR training file"):
        NBASREvaluator(str(tmp_path))


def test_codes_round_trip_through_the_arch_vector():
    space = nb_asr_space()
    for vector in VECTORS:
        code = flat(vector)
        assert arch_vector(space, code) == vector
        assert encode(space, decode(space, code)) == code
