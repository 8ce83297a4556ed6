"""LM-Searcher as an Optuna sampler: an existing Optuna study changes one line to let our proposer and ranker
choose its trials.

::

    study = optuna.create_study(direction="maximize", sampler=LMSearcherSampler(), storage="sqlite:///s.db")
    study.optimize(objective, n_trials=50)

Each trial, the study's search space (the parameters every finished trial has, Optuna's intersection search
space) is laid out as NCode slots as our numeric slots are: a categorical parameter's choices in order, an
integer range every integer (at most 62) or ``levels`` values, a float range ``levels`` values, log-spaced where
the distribution is. The finished trials, mapped to their nearest codes, are the history; our proposer fills a
pool of codes no trial has (running trials of other processes included) and the ranker picks one, which becomes
the trial's parameters. A trial that sets a positive constraint (``trial.set_constraint("params", params -
limit)``, Optuna 5's way; feasible at 0 or less) reads as an infeasible result, as in our own runs: the worst
finished score, or no score with ``infeasible_as="omit"``. What the sampler cannot model falls back to Optuna's
RandomSampler with a warning: the parameters a trial asks for that are not in every finished trial (a
define-by-run space with conditions), and any trial once the space's codes are used up. Enqueued trials
(``study.enqueue_trial``) keep their values; pruners and storages are Optuna's own. The ranker's decision of
each trial is its user attribute ``lmsearcher_decision`` (the ranker, the code, the pool, whether it fell back),
which optuna-dashboard shows.
"""

from __future__ import annotations

import math
import random
import threading
import warnings
from dataclasses import fields
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from agent.config import PROPOSER_DRIVEN, SearchConfig
from agent.driver import SearchError, make_proposer, make_strategy
from agent.loops.common import searcher_view
from agent.runs.store import Observation
from agent.strategies.proposers import ProposalContext
from agent.strategies.rankers import Ranker, RankRequest
from agent.strategies.user_rankers import object_spec
from tools.evaluator import Metric
from tools.ncode import MAX_LEVELS, Range, SearchSpace, Slot, decode, from_indices

DECISION_KEY = "lmsearcher_decision"  # trial user attribute: what the ranker was shown and chose
SAMPLER_OPTIONS = {
    "proposer", "pool_size", "random_fraction", "population", "sample_size", "gp_every", "history_cap", "stopped_as",
    "infeasible_as", "random_start",
    *(f.name for f in fields(SearchConfig) if f.metadata["group"] == "llm"),
}  # fmt: skip


def slot_of(name: str, distribution: BaseDistribution, levels: int) -> Slot:
    """An Optuna distribution as an NCode slot: its choices, or an ordered grid of its range."""
    if isinstance(distribution, CategoricalDistribution):
        return Slot(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        count = (distribution.high - distribution.low) // distribution.step + 1
        if count <= MAX_LEVELS:
            options = list(range(distribution.low, distribution.high + 1, distribution.step))
            return Slot(name, options, numeric=Range("int", distribution.low, distribution.high))
        grid = Range("int", distribution.low, distribution.high, distribution.log, levels)._points(levels)
        snapped = dict.fromkeys(snap(value, distribution) for value in grid)
        return Slot(name, list(snapped), numeric=Range("int", distribution.low, distribution.high, distribution.log))
    if isinstance(distribution, FloatDistribution):
        if distribution.step is not None:
            count = round((distribution.high - distribution.low) / distribution.step) + 1
            if count <= MAX_LEVELS:
                options = [snap(distribution.low + i * distribution.step, distribution) for i in range(count)]
                return Slot(name, options, numeric=Range("float", distribution.low, distribution.high))
            grid = Range("float", distribution.low, distribution.high, False, levels)._points(levels)
            snapped = dict.fromkeys(snap(value, distribution) for value in grid)
            return Slot(name, list(snapped), numeric=Range("float", distribution.low, distribution.high))
        spec = Range("float", distribution.low, distribution.high, distribution.log, levels)
        return Slot(name, [min(max(v, distribution.low), distribution.high) for v in spec.grid(name)], numeric=spec)
    raise TypeError(f"LMSearcherSampler cannot lay out {type(distribution).__name__} of parameter {name!r}")


def snap(value: float, distribution: IntDistribution | FloatDistribution) -> int | float:
    """``value`` on the distribution's step and inside its bounds."""
    step = distribution.step or 1
    snapped = distribution.low + round((value - distribution.low) / step) * step
    snapped = min(max(snapped, distribution.low), distribution.high)
    return int(snapped) if isinstance(distribution, IntDistribution) else float(snapped)


def nearest_index(slot: Slot, value: Any) -> int | None:
    """The option of ``slot`` closest to a trial's value (on a log scale for a log range); None for a choice the
    slot lacks (an enqueued value outside the distribution)."""
    if slot.numeric is None:
        return slot.options.index(value) if value in slot.options else None
    if slot.numeric.log:
        return min(range(len(slot.options)), key=lambda i: abs(math.log(slot.options[i]) - math.log(value)))
    return min(range(len(slot.options)), key=lambda i: abs(slot.options[i] - value))


def code_of(space: SearchSpace, params: dict[str, Any]) -> str | None:
    """A trial's parameters as the nearest code of ``space``; None when it lacks one of the space's parameters."""
    if any(slot.name not in params for slot in space.slots):
        return None
    indices = [nearest_index(slot, params[slot.name]) for slot in space.slots]
    return None if None in indices else from_indices(indices)


def observation_of(trial: FrozenTrial, code: str) -> Observation:
    """A finished trial as our searchers read it: a pruned trial as a stopped evaluation at its last report, and a
    completed one with a positive constraint (Optuna's ``trial.set_constraint``) as an infeasible result."""
    if trial.state == TrialState.COMPLETE:
        feasible = all(value <= 0 for value in trial.constraints.values())
        return Observation(trial.number, code, trial.value, "ok" if feasible else "infeasible")
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        step = max(trial.intermediate_values)
        return Observation(trial.number, code, trial.intermediate_values[step], "stopped", fidelity=float(step))
    return Observation(trial.number, code, None, "failed")


class LMSearcherSampler(optuna.samplers.BaseSampler):
    """Our proposer and ranker choosing an Optuna study's trials; ``ranker`` is any ``--ranker`` name (the
    shipped LM-Searcher-tiny, ``inprocess``, by default) or a :class:`Ranker` object, ``options`` any other
    :class:`agent.config.SearchConfig` field of the search (``proposer``, ``pool_size``, ``random_fraction``,
    LLM settings such as ``base_url`` and ``model``). ``levels`` is how many values a float range (and an
    integer range of more than 62 integers) is laid out as."""

    def __init__(
        self, ranker: str | Ranker = "inprocess", *, levels: int = 8, seed: int | None = None, **options: Any
    ) -> None:
        if not 2 <= levels <= MAX_LEVELS:
            raise ValueError(f"levels must be 2 to {MAX_LEVELS} (one NCode symbol per level), got {levels}")
        unread = sorted(set(options) - SAMPLER_OPTIONS)
        if unread:
            raise ValueError(
                f"LMSearcherSampler does not read {', '.join(unread)} (the study and its optimize call decide "
                f"those); it reads {', '.join(sorted(SAMPLER_OPTIONS))}"
            )
        self._ranker_object = ranker if isinstance(ranker, Ranker) else None
        name = object_spec(ranker) if isinstance(ranker, Ranker) else ranker
        self.config = SearchConfig.from_mapping({**options, "ranker": name}, source="LMSearcherSampler")
        self.config.check()
        self.levels, self.seed = levels, random.randrange(2**31) if seed is None else seed
        self._search_space = IntersectionSearchSpace(include_pruned=True)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._warned: set[str] = set()
        self._build()

    def _build(self) -> None:
        """The ranker and proposer (a model loaded, a server checked), and the lock of threaded studies."""
        try:
            self._ranker = make_strategy(self.config, None, self._ranker_object)
            self._proposer = make_proposer(self.config, self._ranker)
        except SearchError as error:
            raise ValueError(f"LMSearcherSampler: {error}") from None
        self._lock = threading.Lock()  # study.optimize(n_jobs=...) samples from several threads

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (Ray Tune checkpoints its searcher) without the ranker and proposer, rebuilt when loaded."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_ranker", "_proposer", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._build()

    def reseed_rng(self) -> None:
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        space = self._search_space.calculate(study, use_cache=True)
        return {name: distribution for name, distribution in space.items() if not distribution.single()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        if study._is_multi_objective():
            raise ValueError(
                "LMSearcherSampler ranks for one objective and this study has "
                f"{len(study.directions)}; use optuna.samplers.NSGAIISampler, or agent.Study with metric=[...]"
            )
        fixed = trial.system_attrs.get("fixed_params", {})
        if all(name in fixed for name in search_space):  # an enqueued trial: its values are already chosen
            return {}
        with self._lock:
            return self._choose(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        finished = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED), use_cache=True)
        conditional = param_name not in self._search_space.calculate(study, use_cache=True)
        if param_name not in self._warned and conditional and any(param_name in t.params for t in finished):
            self._warned.add(param_name)
            warnings.warn(
                f"LMSearcherSampler: parameter {param_name!r} is not in every finished trial (a conditional or "
                "dynamic space), so RandomSampler samples it; to have the ranker choose it, suggest it in every "
                "trial, or declare the condition with agent.Study (Slot(..., when=...))",
                stacklevel=2,
            )
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def _choose(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """One code: a pool from our proposer, outside every trial's code, ranked for one pick."""
        space = SearchSpace(
            "optuna", [slot_of(name, distribution, self.levels) for name, distribution in search_space.items()]
        )
        history, seen = [], set()
        for other in study._get_trials(deepcopy=False, use_cache=True):
            code = code_of(space, other.params | other.system_attrs.get("fixed_params", {}))
            if code is None or other.number == trial.number:
                continue
            seen.add(code)
            if other.state.is_finished():
                history.append(observation_of(other, code))
        metric = Metric(
            study.metric_names[0] if study.metric_names else "value", study.direction == StudyDirection.MAXIMIZE
        )
        view = searcher_view(history, metric, self.config.stopped_as, self.config.infeasible_as)
        rng = random.Random(f"{self.seed}-{trial.number}")
        n = 1 if self.config.ranker in PROPOSER_DRIVEN else self.config.pool_size
        pool = self._proposer.propose(ProposalContext(space, metric, view, seen, rng), n)
        if not pool:
            self._warn_once("exhausted", "LMSearcherSampler: every code of the study's space has a trial; "
                            "RandomSampler samples the next trials (raise levels= for a finer grid)")  # fmt: skip
            return {}
        decision = self._ranker.rank(RankRequest(space, metric, view, pool, 1, rng))
        chosen = (decision.chosen or pool)[0]
        study._storage.set_trial_user_attr(
            trial._trial_id,
            DECISION_KEY,
            {
                "ranker": decision.picked_by or self._ranker.name,
                "ncode": chosen,
                "pool": decision.pool or pool,
                "fallback": decision.fallback,
            },
        )
        return decode(space, chosen)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)
