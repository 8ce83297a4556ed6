"""NAS-Bench-201 (Dong & Yang 2020) looked up from the public 200-epoch result tables."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from evaluators.data_path import find_file
from tools.evaluator import Evaluator, EvaluatorSetupError, Metric, Outcome
from tools.ncode import decode
from tools.spaces import NB201_EDGES, nb201_space

NB201_FILES = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16-120": "imagenet"}
NB201_ORIGIN = "the GENIUS repository (github.com/mingkai-zheng/GENIUS, folder benchmark/) or NAS-Bench-201 itself"


def arch_string(config: dict[str, str]) -> str:
    """The table key of a decoded cell, e.g. ``|nor_conv_3x3~0|+|...|``."""
    nodes = []
    for target in (1, 2, 3):
        edges = [f"{config[f'edge_{target}_{source}']}~{source}" for t, source in NB201_EDGES if t == target]
        nodes.append("|" + "|".join(edges) + "|")
    return "+".join(nodes)


class NB201Evaluator(Evaluator):
    """The searcher sees validation accuracy; test accuracy is kept for the final report."""

    resources: ClassVar[dict[str, Any]] = {"num_cpus": 0.5}  # a table lookup

    def __init__(self, dataset: str = "cifar10", data: str | None = None) -> None:
        if dataset not in NB201_FILES:
            raise EvaluatorSetupError(f"unknown NAS-Bench-201 dataset {dataset!r}; valid: {', '.join(NB201_FILES)}")
        path = find_file(f"nasbench201_{NB201_FILES[dataset]}.json", "nb201", data, NB201_ORIGIN)
        try:
            self.table: dict[str, dict[str, Any]] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise EvaluatorSetupError(
                f"{path} is not a NAS-Bench-201 JSON table ({error}); download it again"
            ) from None
        self.dataset = dataset
        self.space = nb201_space()
        self.metric = Metric("val_acc", True, f"NAS-Bench-201 {dataset} validation accuracy (%) after 200 epochs")

    def _row(self, ncode: str) -> dict[str, Any]:
        return self.table[arch_string(decode(self.space, ncode))]

    def evaluate(self, ncode: str) -> Outcome:
        return Outcome(score=float(self._row(ncode)["val_acc_200"]))

    def metric_names(self) -> frozenset[str]:
        return frozenset({self.metric.name, "test_acc", "rank"})

    def final_metrics(self, ncode: str) -> dict[str, Any]:
        row = self._row(ncode)
        return {"test_acc": float(row["test_acc_200"]), "rank": int(row["rank"])}
