"""``--task objective``: a user's Python function scores each configuration.

The function takes the decoded configuration (``{slot name: option value}``) and returns
a number (the score) or a mapping of metrics holding the score under the metric's name;
its other numeric entries are recorded as metrics. Exceptions, NaN and a missing score
become failed evaluations (``tools.evaluator_tool.run_evaluation``). With ``eval_timeout``
each call runs in a forked child process, so one that takes too long can be stopped and
recorded as failed.

A function of two arguments, ``objective(config, trial)``, gets a :class:`TrialHandle` as ``trial``:
it reports as it trains (``trial.report(val_acc, epoch)``) and returns early when ``trial.should_stop()``
says the run's scheduler stopped it (raising ``Stopped`` works too); ``trial.fidelity`` says how long to
train (``max_fidelity`` while searching, ``final_fidelity`` in the final stage; None when not set) and
``trial.seed`` which seed to train with.
"""

from __future__ import annotations

import inspect
import multiprocessing
import time
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

from evaluators.references import reference_of, resolve
from tools.evaluator import Evaluator, EvaluatorSetupError, Metric, Outcome, unreported
from tools.ncode import SearchSpace, decode
from tools.processes import exit_with_parent
from tools.reporting import Reporter, Stopped, asking_over
from tools.spaces import SpaceFileError, load_space_file, space_from_dict

Objective = Callable[[dict[str, Any]], Any]


def load_space(space: str | Mapping | SearchSpace | None, task: str) -> SearchSpace:
    """A space given as a YAML path, an inline definition (run files, stored runs) or an object."""
    if isinstance(space, SearchSpace):
        return space
    if space is None:
        raise EvaluatorSetupError(f"--task {task} needs --space SPACE.yaml (the slots to search and their options)")
    try:
        return space_from_dict(dict(space), "space") if isinstance(space, Mapping) else load_space_file(space)
    except SpaceFileError as error:
        raise EvaluatorSetupError(str(error)) from None


def outcome_of(result: Any, metric: str) -> Outcome:
    """A number is the score; a mapping holds it under ``metric`` beside other metrics."""
    if isinstance(result, Mapping):
        if metric not in result:
            raise ValueError(unreported(metric, f"the objective returned the keys {sorted(map(str, result))}"))
        extra = {str(k): v for k, v in result.items() if k != metric and isinstance(v, Real | str)}
        return Outcome(_number(result[metric]), extra)
    return Outcome(_number(result))


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"the objective returned {value!r}; return a number or a dict of numbers")
    return float(value)


class TrialHandle:
    """What an objective ``(config, trial)`` gets: the evaluation's reporter, and how long and with which seed to
    train."""

    def __init__(self, reporter: Reporter, fidelity: float | None, seed: int) -> None:
        self.reporter, self.fidelity, self.seed = reporter, fidelity, seed

    def report(self, value: float, step: float) -> bool:
        """Tell the search ``value`` at ``step`` (an epoch); returns :meth:`should_stop`."""
        return self.reporter.report(value, step)

    def should_stop(self) -> bool:
        """Whether the run's scheduler stopped this evaluation: return now (the last report is its score)."""
        return self.reporter.should_stop()


def takes_trial(objective: Objective) -> bool:
    """Whether the objective takes a second argument, the trial handle it reports through."""
    try:
        parameters = inspect.signature(objective).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)


def _call(objective: Objective, config: dict[str, Any], trial: TrialHandle) -> Any:
    return objective(config, trial) if takes_trial(objective) else objective(config)


def _call_in_child(objective: Objective, config: dict[str, Any], connection: Any, context: tuple) -> None:
    exit_with_parent()  # a search killed with SIGKILL leaves no objective running
    try:
        connection.send(("ok", _call(objective, config, TrialHandle(Reporter(asking_over(connection)), *context))))
    except Stopped:
        connection.send(("stopped", None))
    except BaseException as error:  # reported to the parent as a failed evaluation
        connection.send(("error", f"{type(error).__name__}: {error}"))


class ObjectiveEvaluator(Evaluator):
    fidelity_option = "fidelity"  # what the final stage sets to train again (agent/final.py)

    def __init__(
        self,
        space: str | Mapping | SearchSpace | None,
        objective: str | Objective | None,
        metric: str | None = None,
        maximize: bool = True,
        timeout_s: float | None = None,
        fidelity: float | None = None,
        seed: int = 0,
    ) -> None:
        self.fidelity, self.seed = fidelity, seed
        if objective is None:
            raise EvaluatorSetupError(
                "--task objective needs --objective module:function. A run started from Python with a function "
                "that cannot be imported (a closure, a lambda, a function of a script) resumes only from Python: "
                "Study.load(db, run_id, objective=function).optimize()"
            )
        self.objective: Objective = resolve(objective, "objective") if isinstance(objective, str) else objective
        if not callable(self.objective):
            raise EvaluatorSetupError(f"objective {objective!r} is not callable")
        self.reference = objective if isinstance(objective, str) else reference_of(objective)
        self.space = load_space(space, "objective")
        self.metric = Metric(metric or "score", maximize, f"returned by {self.reference or 'a Python function'}")
        if timeout_s is not None and not timeout_s > 0:
            raise EvaluatorSetupError(f"--eval-timeout must be a positive number of seconds, got {timeout_s}")
        self.timeout_s = timeout_s

    def evaluate(self, ncode: str) -> Outcome:
        return self.evaluate_reporting(ncode, Reporter())

    def evaluate_reporting(self, ncode: str, reporter: Reporter) -> Outcome:
        config = decode(self.space, ncode)
        if self.timeout_s is None:
            result = _call(self.objective, config, TrialHandle(reporter, self.fidelity, self.seed))
            return Outcome(None, status="failed", error="stopped") if reporter.stopped else self._outcome(result)
        return self._evaluate_in_child(config, reporter)

    def _outcome(self, result: Any) -> Outcome:
        return outcome_of(result, self.metric.name)

    def _evaluate_in_child(self, config: dict[str, Any], reporter: Reporter) -> Outcome:
        """The objective in a forked child; its reports come over the pipe and are answered by ``reporter``."""
        context = multiprocessing.get_context("fork")  # the child inherits the function: closures work too
        ours, theirs = context.Pipe()
        args = (self.objective, config, theirs, (self.fidelity, self.seed))
        child = context.Process(target=_call_in_child, args=args)
        child.start()
        theirs.close()
        deadline = time.monotonic() + self.timeout_s
        answer: tuple[str, Any] | None = None
        try:
            while answer is None and ours.poll(max(0.0, deadline - time.monotonic())):
                kind, value = ours.recv()
                if kind == "report":
                    ours.send(reporter.report(value[1], value[0]))
                else:
                    answer = (kind, value)
            timed_out = answer is None and time.monotonic() >= deadline
        except EOFError:
            timed_out = False
        finally:
            if child.is_alive():
                child.kill()
            child.join()
            ours.close()
        if timed_out:
            return Outcome(None, status="failed", error=f"timed out after {self.timeout_s:g} s")
        if answer is None:
            return Outcome(None, status="failed", error=f"the objective's process died (exit code {child.exitcode})")
        kind, value = answer
        if kind in ("error", "stopped"):
            return Outcome(None, status="failed", error=value or "stopped")  # a stop becomes "stopped" upstream
        return Outcome(None, status="failed", error="stopped") if reporter.stopped else self._outcome(value)

    def describe(self) -> str:
        return f"{self.space.name}: {self.metric.name} of {self.reference or 'a Python function'}"
