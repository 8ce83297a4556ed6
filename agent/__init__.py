"""LM-Searcher as a library: search your own objective, command or evaluator.

``Study`` is the entry point (create, optimize, ask/tell, load); ``SearchSpace`` and ``Slot``
describe what to search; ``Evaluator``, ``Metric`` and ``Outcome`` are the contract of a plugin
task (``--task module:Class``); ``SearchConfig`` holds every option and its default.
"""

from agent.config import ConfigError, SearchConfig
from agent.driver import SearchError
from agent.study import Study, Trial
from tools.evaluator import Evaluator, EvaluatorSetupError, Metric, Outcome
from tools.ncode import SearchSpace, Slot

__all__ = [
    "ConfigError",
    "Evaluator",
    "EvaluatorSetupError",
    "Metric",
    "Outcome",
    "SearchConfig",
    "SearchError",
    "SearchSpace",
    "Slot",
    "Study",
    "Trial",
]
