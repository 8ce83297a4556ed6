"""LM-Searcher as a Ray Tune searcher: ``TuneConfig(search_alg=LMSearcherSearch(...))``.

Ray Tune's own ``OptunaSearch`` runs any Optuna sampler through Optuna's ask/tell, converting Ray Tune's search
space (``tune.choice``, ``tune.randint``, ``tune.loguniform`` ...) to Optuna distributions; this is that searcher
with :class:`LMSearcherSampler`, so the ranker chooses each trial exactly as it does in an Optuna study. Ray Tune's
schedulers (ASHA) stop trials as they would any searcher's; a stopped trial reaches the ranker at its last
reported value. Checkpointing is Ray Tune's (``Tuner.restore``): the searcher is pickled with its study, and the
sampler's ranker is rebuilt when it is restored.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch

from agent.integrations.optuna_sampler import LMSearcherSampler
from agent.strategies.rankers import Ranker


class LMSearcherSearch(OptunaSearch):
    """``space``, ``metric``, ``mode`` and ``points_to_evaluate`` as Ray Tune's searchers take them (or from
    ``TuneConfig`` and ``param_space``); ``ranker``, ``levels``, ``seed`` and the other options as
    :class:`LMSearcherSampler` takes them."""

    def __init__(
        self,
        space: dict[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        *,
        ranker: str | Ranker = "inprocess",
        levels: int = 8,
        seed: int | None = None,
        **options: Any,
    ) -> None:
        sampler = LMSearcherSampler(ranker, levels=levels, seed=seed, **options)
        super().__init__(space, metric, mode, points_to_evaluate=points_to_evaluate, sampler=sampler, seed=seed)
