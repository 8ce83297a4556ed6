"""NAS-Bench-ASR (Mehrotra et al., ICLR 2021) looked up from the released pickle files.

The public release (github.com/SamsungLabs/nb-asr/releases, v1.1.0) holds, per setting, one
pickle file per training seed: ``nb-asr-e40-1234.pickle``, ``-1235``, ``-1236`` (40 epochs on
TIMIT), plus optional on-device latencies (``nb-asr-bench-gtx-1080ti-fp32.pickle``,
``nb-asr-bench-jetson-nano-fp32.pickle``) and static information (``nb-asr-info.pickle``:
parameters, FLOPs). Each file is two pickles one after the other: a header (``dataset_type``,
``columns``, ``search_space``, ``version``, and ``seed`` or ``device``) and a list of rows whose
values follow ``columns``. Training rows start ``model_hash, val_per, test_per``: the validation
PER after every epoch and the test PER (at the epoch of lowest validation PER).

Rows are keyed by a hash of the architecture's graph after removing ``zero`` operations and
dangling nodes, so that the 13,824 arch vectors of the space map onto 8,242 distinct models. The
space's NCode is the flattened arch vector ``[[op, s], [op, s, s], [op, s, s, s]]`` (op 0-5 over
linear, conv5, conv5d2, conv7, conv7d2, zero; a skip bit 0 = none, 1 = identity), and the
evaluator's space lists one canonical code per model present in the files (the first in code
order), so a search never spends its budget on two codes of the same model.

The searcher sees validation PER (best epoch, averaged over the seed files found); the final
report adds the test PER. PER is a fraction (0.21 = 21 %), lower is better.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import pickle
import re
from dataclasses import replace
from pathlib import Path
from statistics import mean
from typing import Any, ClassVar

from evaluators.data_path import DATA_ENV, data_root
from tools.evaluator import Evaluator, EvaluatorSetupError, Metric, Outcome
from tools.ncode import SearchSpace, from_indices, to_indices
from tools.spaces import NB_ASR_MAIN_OPS, nb_asr_space

NB_ASR_ORIGIN = "the NAS-Bench-ASR releases page, github.com/SamsungLabs/nb-asr/releases (tag v1.1.0)"
NB_ASR_SUBDIR = "nb_asr"
EPOCHS = 40
TRAINING_FILE = re.compile(rf"nb-asr-e{EPOCHS}-(\d+)\.pickle")
BENCH_FILE = re.compile(r"nb-asr-bench-(.+)\.pickle")
INFO_FILE = "nb-asr-info.pickle"
EXAMPLE_FILE = f"nb-asr-e{EPOCHS}-1234.pickle"


# ---------------------------------------------------------------- architecture graph and its hash


def arch_vector(space: SearchSpace, code: str) -> list[list[int]]:
    """The benchmark's arch vector of a code: the code's digits grouped per node."""
    indices = to_indices(space, code)
    vector, position, node = [], 0, 1
    while position < len(indices):
        vector.append(list(indices[position : position + node + 1]))
        position += node + 1
        node += 1
    return vector


def minimal_graph(vector: list[list[int]]) -> tuple[list[list[int]], list[str]]:
    """Adjacency matrix and labels of the cell graph with ``zero`` ops and dangling nodes removed.

    Vertex 0 is the input, vertices 1..n the nodes (labelled by their main op), n+1 the output.
    Each node reads the previous vertex; the skip bits of node k connect vertices 0..k-1 to the
    vertex after k (the benchmark's own graph convention, which its hashes are computed on).
    """
    size = len(vector) + 2
    adjacency = [[0] * size for _ in range(size)]
    labels = ["input", *(NB_ASR_MAIN_OPS[node[0]] for node in vector), "output"]
    for target in range(1, size):
        adjacency[target - 1][target] = 1
    for node, (_, *skips) in enumerate(vector, start=1):
        for source, bit in enumerate(skips):
            if bit:
                adjacency[source][node + 1] = 1
    for vertex, label in enumerate(labels):
        if label == "zero":
            for other in range(size):
                adjacency[vertex][other] = adjacency[other][vertex] = 0
    forward = _reachable(adjacency, 0, forward=True)
    backward = _reachable(adjacency, size - 1, forward=False)
    keep = [v for v in range(size) if v in forward and v in backward]
    return [[adjacency[a][b] for b in keep] for a in keep], [labels[v] for v in keep]


def _reachable(adjacency: list[list[int]], start: int, forward: bool) -> set[int]:
    seen, stack = {start}, [start]
    while stack:
        vertex = stack.pop()
        for other in range(len(adjacency)):
            linked = adjacency[vertex][other] if forward else adjacency[other][vertex]
            if linked and other not in seen:
                seen.add(other)
                stack.append(other)
    return seen


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def graph_hash(adjacency: list[list[int]], labels: list[str]) -> str:
    """NAS-Bench-101-style iterated neighbourhood hash, as the benchmark keys its rows.

    Input is labelled -1, output -2, a node by its op's index; degrees are written as floats
    (the benchmark sums a float matrix), which the hash depends on.
    """
    size = len(labels)
    numeric = [] if not labels else [-1, *(NB_ASR_MAIN_OPS.index(label) for label in labels[1:-1]), -2]
    out_degree = [float(sum(row)) for row in adjacency]
    in_degree = [float(sum(adjacency[a][b] for a in range(size))) for b in range(size)]
    hashes = [_md5(str((out_degree[v], in_degree[v], numeric[v]))) for v in range(size)]
    for _ in range(size):
        hashes = [
            _md5(
                "".join(sorted(hashes[w] for w in range(size) if adjacency[w][v]))
                + "|"
                + "".join(sorted(hashes[w] for w in range(size) if adjacency[v][w]))
                + "|"
                + hashes[v]
            )
            for v in range(size)
        ]
    return _md5(str(sorted(hashes)))


def model_hash(vector: list[list[int]]) -> str:
    """The benchmark's key of an arch vector (equal for isomorphic minimal graphs)."""
    return graph_hash(*minimal_graph(vector))


@functools.cache
def canonical_codes() -> dict[str, str]:
    """Model hash -> the first code (in code order) of each of the space's 8,242 distinct models."""
    space = nb_asr_space()
    canonical: dict[str, str] = {}
    for indices in itertools.product(*(range(len(slot.options)) for slot in space.slots)):
        code = from_indices(indices)
        canonical.setdefault(model_hash(arch_vector(space, code)), code)
    return canonical


# ---------------------------------------------------------------- the released files


def find_folder(explicit: str | None) -> Path:
    """The folder (or single training file) holding the NAS-Bench-ASR pickles."""
    root = data_root(explicit)
    if root is not None and root.is_file():
        return root
    candidates = [] if root is None else [root, root / NB_ASR_SUBDIR]
    for candidate in candidates:
        if candidate.is_dir() and any(TRAINING_FILE.fullmatch(p.name) for p in candidate.iterdir()):
            return candidate
    where = " or ".join(str(c) for c in candidates) or f"--data PATH or ${DATA_ENV}"
    raise EvaluatorSetupError(
        f"NAS-Bench-ASR file {EXAMPLE_FILE} (or another nb-asr-e{EPOCHS}-SEED.pickle) not found "
        f"(looked in {where}); download nb-asr-e{EPOCHS}-1234/1235/1236.pickle (and optionally "
        f"nb-asr-bench-*.pickle, {INFO_FILE}) from {NB_ASR_ORIGIN} and pass their folder with --data PATH"
    )


def read_pickle_pair(path: Path, expected_type: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Header and rows (as column -> value dicts) of one released file; malformed -> setup error."""
    try:
        with path.open("rb") as handle:
            header = pickle.load(handle)
            data = pickle.load(handle)
    except Exception as error:  # unpickling raises many types for a file that is not ours
        raise EvaluatorSetupError(
            f"{path} is not a NAS-Bench-ASR pickle ({type(error).__name__}: {error}); download it again from "
            f"{NB_ASR_ORIGIN}"
        ) from None
    columns = header.get("columns") if isinstance(header, dict) else None
    if not isinstance(columns, list) or header.get("dataset_type") != expected_type or not isinstance(data, list):
        raise EvaluatorSetupError(
            f"{path} is not a NAS-Bench-ASR {expected_type} file (header {str(header)[:120]}); "
            f"download it again from {NB_ASR_ORIGIN}"
        )
    first = {"training": ["model_hash", "val_per", "test_per"], "benchmarking": ["model_hash", "latency"]}
    wanted = first.get(expected_type, ["model_hash"])
    if columns[: len(wanted)] != wanted:
        raise EvaluatorSetupError(f"{path}: columns {columns} do not start with {wanted}; is this file from v1.1.0?")
    ops = (header.get("search_space") or {}).get("ops")
    if ops is not None and list(ops) != list(NB_ASR_MAIN_OPS):
        raise EvaluatorSetupError(f"{path}: operations {ops} differ from this space's {list(NB_ASR_MAIN_OPS)}")
    return header, [dict(zip(columns, row, strict=False)) for row in data]


def _best(values: Any) -> float:
    """Best (lowest) validation PER over epochs; a scalar is taken as is."""
    if isinstance(values, list | tuple) or hasattr(values, "__len__"):
        return float(min(values))
    return float(values)


class NBASREvaluator(Evaluator):
    """Validation PER for the search, test PER for the final report (averaged over seed files)."""

    resources: ClassVar[dict[str, Any]] = {"num_cpus": 0.5}  # a table lookup

    def __init__(self, data: str | None = None, dataset: str | None = None) -> None:
        if dataset not in (None, "timit"):
            raise EvaluatorSetupError(f"NAS-Bench-ASR has one dataset, timit; got --dataset {dataset}")
        location = find_folder(data)
        files = (
            [location]
            if location.is_file()
            else sorted(p for p in location.iterdir() if TRAINING_FILE.fullmatch(p.name))
        )
        self.seeds: list[int] = []
        runs: dict[str, list[dict[str, Any]]] = {}
        for path in files:
            header, rows = read_pickle_pair(path, "training")
            self.seeds.append(int(header.get("seed", len(self.seeds))))
            for row in rows:
                runs.setdefault(str(row["model_hash"]), []).append(row)
        self.extra: dict[str, dict[str, Any]] = {}
        folder = location.parent if location.is_file() else location
        for path in sorted(folder.iterdir()):
            match = BENCH_FILE.fullmatch(path.name)
            if match or path.name == INFO_FILE:
                header, rows = read_pickle_pair(path, "benchmarking" if match else "static")
                prefix = f"latency_{header.get('device', match.group(1))}_s" if match else None
                for row in rows:
                    into = self.extra.setdefault(str(row["model_hash"]), {})
                    if prefix:
                        into[prefix] = float(row["latency"])
                    else:
                        into.update({k: row[k] for k in ("params", "flops") if k in row})
        self.table = {
            key: {
                "val_per": mean(_best(row["val_per"]) for row in rows),
                "test_per": mean(float(row["test_per"]) for row in rows),
                "seeds": len(rows),
            }
            for key, rows in runs.items()
        }
        self.dataset = "timit"
        full = nb_asr_space()
        members = frozenset(code for key, code in canonical_codes().items() if key in self.table)
        if not members:
            raise EvaluatorSetupError(
                f"no architecture of {files[0]} matches this space's hashes; is it a NAS-Bench-ASR file from "
                f"{NB_ASR_ORIGIN}?"
            )
        self.space = replace(full, members=members)
        self.metric = Metric(
            "per", False, f"NAS-Bench-ASR TIMIT validation phoneme error rate (best of {EPOCHS} epochs, fraction)"
        )

    def row(self, ncode: str) -> tuple[str, dict[str, Any]]:
        key = model_hash(arch_vector(self.space, ncode))
        if key not in self.table:
            raise KeyError(f"architecture {arch_vector(self.space, ncode)} (hash {key}) is not in the benchmark files")
        return key, self.table[key]

    def evaluate(self, ncode: str) -> Outcome:
        key, row = self.row(ncode)
        metrics = {"model_hash": key, "seeds": row["seeds"], **self.extra.get(key, {})}
        return Outcome(score=row["val_per"], metrics=metrics)

    def metric_names(self) -> frozenset[str]:
        extra = {name for metrics in self.extra.values() for name in metrics}
        return frozenset({self.metric.name, "model_hash", "seeds", "test_per", "arch_vec", *extra})

    def final_metrics(self, ncode: str) -> dict[str, Any]:
        key, row = self.row(ncode)
        return {"test_per": row["test_per"], "arch_vec": str(arch_vector(self.space, ncode)), **self.extra.get(key, {})}
