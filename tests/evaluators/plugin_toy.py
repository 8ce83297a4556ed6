"""A user's evaluator, loaded as a plugin task (``--task tests.evaluators.plugin_toy:ToyEvaluator``)."""

from __future__ import annotations

from tools.evaluator import Evaluator, Metric, Outcome
from tools.ncode import SearchSpace, Slot, decode


class ToyEvaluator(Evaluator):
    """Built with the run's TaskOptions: ``--metric`` names its score."""

    def __init__(self, options) -> None:
        self.space = SearchSpace("toy_plugin", [Slot(f"x{i}", [0, 1, 2, 3]) for i in range(4)])
        self.metric = Metric(options.metric or "fitness")

    def evaluate(self, ncode: str) -> Outcome:
        config = decode(self.space, ncode)
        return Outcome(float(sum(config.values())))


class NoOptions(ToyEvaluator):
    def __init__(self) -> None:
        super().__init__(type("Options", (), {"metric": None})())


def not_an_evaluator() -> str:
    return "surprise"
