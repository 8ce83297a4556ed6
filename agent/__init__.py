"""LM-Searcher as a library: search your own objective, command or evaluator.

``Study`` is the entry point (create, optimize, ask/tell, load); ``SearchSpace`` and ``Slot``
describe what to search; ``Evaluator``, ``Metric`` and ``Outcome`` are the contract of a plugin
task (``--task module:Class``); ``Ranker``, ``RankRequest`` and ``Decision`` that of a user's own ranker
(``ranker=`` an object, or ``--ranker module:name``); ``Reporter`` is what an objective ``(config, trial)``
reports through, and ``Stopped`` what it may raise once told to stop; ``SearchConfig`` holds every option and
its default.
"""

from agent.config import ConfigError, SearchConfig
from agent.driver import SearchError
from agent.strategies.rankers import Decision, Ranker, RankerStopped, RankRequest
from agent.study import Study, Trial
from tools.evaluator import Evaluator, EvaluatorSetupError, Metric, Outcome
from tools.ncode import SearchSpace, Slot
from tools.reporting import Reporter, Stopped

__all__ = [
    "ConfigError",
    "Decision",
    "Evaluator",
    "EvaluatorSetupError",
    "Metric",
    "Outcome",
    "RankRequest",
    "Ranker",
    "RankerStopped",
    "Reporter",
    "SearchConfig",
    "SearchError",
    "SearchSpace",
    "Slot",
    "Stopped",
    "Study",
    "Trial",
]
