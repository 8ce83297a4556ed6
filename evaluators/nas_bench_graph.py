"""NAS-Bench-Graph (Qin et al. 2022) through the `nas-bench-graph` package, which ships its data:
the embedded default task, runnable with no download."""

from __future__ import annotations

from typing import Any, ClassVar

from tools.evaluator import Evaluator, EvaluatorSetupError, Metric, Outcome
from tools.ncode import decode
from tools.spaces import nas_bench_graph_space

NBG_DATASETS = ("cora", "citeseer", "pubmed", "cs", "physics", "photo", "computers", "arxiv", "proteins")


class NasBenchGraphEvaluator(Evaluator):
    resources: ClassVar[dict[str, Any]] = {"num_cpus": 0.5}  # a table lookup

    def __init__(self, dataset: str = "cora") -> None:
        if dataset not in NBG_DATASETS:
            raise EvaluatorSetupError(f"unknown NAS-Bench-Graph dataset {dataset!r}; valid: {', '.join(NBG_DATASETS)}")
        from nas_bench_graph import light_read

        self.table: dict[int, dict[str, Any]] = light_read(dataset)
        self.dataset = dataset
        self.space = nas_bench_graph_space(dataset)
        self.metric = Metric("val_acc", True, f"NAS-Bench-Graph {dataset} validation accuracy (fraction)")

    def _row(self, ncode: str) -> dict[str, Any]:
        from nas_bench_graph import Arch

        config = decode(self.space, ncode)
        arch = Arch([int(c) for c in config["links"]], [config[f"op_{layer}"] for layer in range(4)])
        return self.table[arch.valid_hash()]

    def evaluate(self, ncode: str) -> Outcome:
        row = self._row(ncode)
        return Outcome(score=float(row["valid_perf"]), metrics={"latency_s": float(row["latency"])})

    def final_metrics(self, ncode: str) -> dict[str, Any]:
        row = self._row(ncode)
        return {"test_acc": float(row["perf"]), "params_m": float(row["para"])}

    def metric_names(self) -> frozenset[str]:
        return frozenset({self.metric.name, "latency_s", "test_acc", "params_m"})

    def known_before(self, ncode: str) -> dict[str, float]:
        """The parameter count and the measured inference latency: both come from the architecture, not training."""
        row = self._row(ncode)
        return {"params_m": float(row["para"]), "latency_s": float(row["latency"])}
