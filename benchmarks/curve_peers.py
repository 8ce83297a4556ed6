"""Multi-fidelity peers (Optuna's Hyperband and successive halving, Syne Tune's ASHA and BOHB, Ray Tune's ASHA) replayed
on a table.

Why: a searcher that stops bad configurations early must be compared with the early-stopping methods users already
know, on the same curves and the same budget. The table (benchmarks/data/digits_mlp, made by make_curves.py) holds
each configuration's real per-epoch validation accuracy, so training is simulated: a trial "trains" epoch by epoch,
reading ``val_acc[epoch - 1]``, and reports it to the method, which may stop it; a trial's cost is the number of
epochs it ran. Trials run one after another (one worker), as Optuna's ``study.optimize`` does by default; with one
worker ASHA is not asynchronous in effect (a trial is promoted or stopped as soon as it reaches a rung).

Methods (``--method``, comma-separated for several):

* ``optuna-hyperband``: TPESampler + HyperbandPruner(min_resource=1, max_resource=27, reduction_factor=3).
* ``optuna-sha``: TPESampler + SuccessiveHalvingPruner(min_resource=1, reduction_factor=3).
* ``optuna-lmsearcher-sha``: ``LMSearcherSampler()`` (our default ranker inside Optuna) + the same pruner.
* ``optuna-random``: RandomSampler, no pruner, every trial trains 27 epochs (the full-fidelity reference).
* ``syne-asha``: Syne Tune's ``baselines.ASHA`` (random search as its searcher; grace period 1, max_t 27, rf 3).
* ``syne-bohb``: Syne Tune's ``baselines.BOHB`` (ASHA's stopping with a KDE searcher, Falkner et al. 2018).
* ``ray-lmsearcher-asha``: Ray Tune's ``Tuner`` with ``LMSearcherSearch`` (our default ranker) and Ray's own
  ``ASHAScheduler`` (grace period 1, max_t 27, rf 3), one trial at a time; each trial reports its epochs with
  ``tune.report``. ``ray-random-asha``: the same with Ray's random search. Ray costs about 2 s a trial.

Every slot is a categorical choice for every method (Optuna's ``suggest_categorical``, Syne Tune's ``choice``). Seeds
fix each method's random draws (Optuna's sampler seed and the study's name, from which HyperbandPruner draws each
trial's bracket; Syne Tune's ``random_seed`` and numpy's global generator, which Syne Tune's random searcher and
bracket choice read), so a rerun gives the same trials. Methods are not told to avoid repeats: a configuration
suggested twice is trained (and paid for) twice, as it would be in a real run.

Syne Tune is imported only by its methods, so the script runs in the project's venv (Optuna) and in a separate venv
holding syne-tune and pyyaml, which keeps syne-tune's pins away from the project's::

    python3 -m venv /root/.venvs/syne-tune && /root/.venvs/syne-tune/bin/pip install syne-tune==0.16.0 pyyaml
    .venv/bin/python benchmarks/curve_peers.py --method optuna-hyperband,optuna-sha,optuna-random --seeds 0-9
    /root/.venvs/syne-tune/bin/python benchmarks/curve_peers.py --method syne-asha,syne-bohb --seeds 0-9
    .venv/bin/python benchmarks/curve_peers.py --summarize benchmarks/results/curve_peers_*.json

Each method writes ``benchmarks/results/curve_peers_<method>.json`` (or ``--out FILE`` for a single method): per
seed, the sequence of trials (NCode, configuration, epochs run, last value, whether it reached 27 epochs, cumulative
epochs) and a summary. ``epochs_to_target`` reads such a record.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seeds import parse_seeds

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TABLE = ROOT / "benchmarks" / "data" / "digits_mlp"
RESULTS = ROOT / "benchmarks" / "results"
MAX_EPOCHS = 27
REDUCTION_FACTOR = 3
TARGETS = (0.96, 0.97, 0.975)  # validation accuracies whose epochs-to-reach the summary reports
# tools/ncode.py's symbols, repeated here so that the script runs in a venv without the project installed
SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

Trial = dict[str, Any]


class CurveTable:
    """A space (space.yaml) and its learning curves (curves.json): what a simulated trial reads."""

    def __init__(self, directory: Path = DEFAULT_TABLE) -> None:
        import yaml  # in the project's venv and in the Syne Tune venv (installed beside syne-tune)

        space = yaml.safe_load((directory / "space.yaml").read_text())
        self.directory = directory
        self.slots: list[tuple[str, list[Any]]] = [(slot["name"], list(slot["options"])) for slot in space["slots"]]
        self.rows: dict[str, dict[str, Any]] = {}
        for row in json.loads((directory / "curves.json").read_text()):
            code = self.ncode(row)
            if len(row["val_acc"]) != MAX_EPOCHS:
                raise ValueError(f"{directory}: {code} has {len(row['val_acc'])} epochs, expected {MAX_EPOCHS}")
            self.rows[code] = row

    def ncode(self, config: dict[str, Any]) -> str:
        """The project's NCode of a configuration: each slot's option index (matched by ==, so 0 == 0.0)."""
        return "".join(SYMBOLS[options.index(config[name])] for name, options in self.slots)

    def config(self, config: dict[str, Any]) -> dict[str, Any]:
        """A method's configuration written with the table's own option values (plain JSON types)."""
        return {name: options[options.index(config[name])] for name, options in self.slots}

    def curve(self, config: dict[str, Any]) -> list[float]:
        return self.rows[self.ncode(config)]["val_acc"]


class Record:
    """The trials of one run, in the order they were started, with the cumulative epochs after each."""

    def __init__(self, table: CurveTable) -> None:
        self.table = table
        self.trials: list[Trial] = []

    def add(self, config: dict[str, Any], epochs: int) -> None:
        config = self.table.config(config)
        spent = (self.trials[-1]["cum_epochs"] if self.trials else 0) + epochs
        self.trials.append(
            {
                "ncode": self.table.ncode(config),
                "config": config,
                "epochs": epochs,
                "last": self.table.curve(config)[epochs - 1],
                "full": epochs == MAX_EPOCHS,
                "cum_epochs": spent,
            }
        )


def epochs_to_target(trials: list[Trial], target: float) -> int | None:
    """Summed epochs at which the best val_acc among trials that ran all 27 epochs first reached ``target``.

    Only full-fidelity trials count: a method's answer is a configuration trained to the end, not a promising
    early value. Trials run one after another, so a trial reaches epoch 27 when the summed epochs are its
    ``cum_epochs``. None if no full trial reached the target.
    """
    for trial in trials:
        if trial["full"] and trial["last"] >= target:
            return trial["cum_epochs"]
    return None


def best_full(trials: list[Trial]) -> Trial | None:
    """The full-fidelity trial with the best final val_acc (the first one on ties): the method's answer."""
    full = [trial for trial in trials if trial["full"]]
    return max(full, key=lambda trial: trial["last"]) if full else None


def _optuna(pruner: str, sampler: str) -> Callable[[CurveTable, int, int], Record]:
    def run(table: CurveTable, seed: int, n_trials: int) -> Record:
        import optuna
        from optuna.trial import TrialState

        from agent.integrations.optuna_sampler import LMSearcherSampler

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        pruners = {
            "hyperband": lambda: optuna.pruners.HyperbandPruner(
                min_resource=1, max_resource=MAX_EPOCHS, reduction_factor=REDUCTION_FACTOR
            ),
            "sha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=REDUCTION_FACTOR),
            "none": optuna.pruners.NopPruner,
        }
        samplers = {
            "lmsearcher": lambda: LMSearcherSampler(seed=seed),
            "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
            "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        }
        # HyperbandPruner puts a trial in a bracket by a hash of the study's name (a random UUID unless named) and the
        # trial's number: name the study after the method and seed, or reruns differ
        study = optuna.create_study(
            study_name=f"curve-peers-{sampler}-{pruner}-{seed}",
            direction="maximize",
            sampler=samplers[sampler](),
            pruner=pruners[pruner](),
        )
        record = Record(table)
        for _ in range(n_trials):
            trial = study.ask()
            config = {name: trial.suggest_categorical(name, options) for name, options in table.slots}
            curve = table.curve(config)
            for epoch in range(1, MAX_EPOCHS + 1):
                trial.report(curve[epoch - 1], epoch)
                # SuccessiveHalvingPruner has no max_resource and would rank a trial at epoch 27 too: a trial that
                # has trained all its epochs is complete, so the pruner is only asked before the last one
                if epoch < MAX_EPOCHS and trial.should_prune():
                    study.tell(trial, state=TrialState.PRUNED)
                    break
            else:
                study.tell(trial, curve[-1])
            record.add(config, epoch)
        return record

    return run


def _syne(kind: str) -> Callable[[CurveTable, int, int], Record]:
    def run(table: CurveTable, seed: int, n_trials: int) -> Record:
        from datetime import datetime

        import numpy as np

        try:
            import syne_tune  # noqa: F401
        except ImportError:
            sys.exit(f"syne-{kind} needs syne-tune, which lives in its own venv: see this script's docstring")
        from syne_tune.backend.trial_status import Trial as SyneTrial
        from syne_tune.config_space import choice
        from syne_tune.optimizer.baselines import ASHA, BOHB
        from syne_tune.optimizer.scheduler import SchedulerDecision

        logging.getLogger("syne_tune").setLevel(logging.ERROR)  # ASHA/BOHB warn on every run about an unset option
        warnings.filterwarnings("ignore", category=FutureWarning)  # pandas, inside BOHB's KDE, on every suggestion
        # Syne Tune's random searcher (RandomSearcher.suggest samples without a random_state) and ASHA's bracket
        # choice (on_trial_add) read numpy's global generator: seed it, or reruns differ
        np.random.seed(seed)
        random.seed(seed)
        config_space = {name: choice(options) for name, options in table.slots}
        scheduler = (ASHA if kind == "asha" else BOHB)(
            config_space,
            metric="val_acc",
            time_attr="epoch",
            max_t=MAX_EPOCHS,
            do_minimize=False,
            random_seed=seed,
            grace_period=1,
            reduction_factor=REDUCTION_FACTOR,
        )
        record = Record(table)
        for trial_id in range(n_trials):
            suggestion = scheduler.suggest()
            if suggestion is None:  # the searcher ran out of configurations
                break
            config = {name: suggestion.config[name] for name, _ in table.slots}
            trial = SyneTrial(trial_id=trial_id, config=suggestion.config, creation_time=datetime.now())
            scheduler.on_trial_add(trial)
            curve = table.curve(config)
            # what syne_tune.Tuner does with each reported result: STOP (which ASHA also says at max_t) removes the
            # trial; a trial that ends without STOP completes
            for epoch in range(1, MAX_EPOCHS + 1):
                result = {"val_acc": curve[epoch - 1], "epoch": epoch}
                if scheduler.on_trial_result(trial, result) == SchedulerDecision.STOP:
                    scheduler.on_trial_remove(trial)
                    break
            else:
                scheduler.on_trial_complete(trial, result)
            record.add(config, epoch)
        return record

    return run


def _ray(searcher: str) -> Callable[[CurveTable, int, int], Record]:
    def run(table: CurveTable, seed: int, n_trials: int) -> Record:
        import os

        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search import BasicVariantGenerator

        from agent.integrations.ray_tune import LMSearcherSearch

        curves = {code: row["val_acc"] for code, row in table.rows.items()}
        slots = table.slots

        def trainable(config: dict[str, Any]) -> None:
            code = "".join(SYMBOLS[options.index(config[name])] for name, options in slots)
            for epoch, value in enumerate(curves[code], start=1):
                tune.report({"val_acc": value, "epoch": epoch})

        if not ray.is_initialized():
            ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        search_alg = (
            LMSearcherSearch(seed=seed) if searcher == "lmsearcher" else BasicVariantGenerator(random_state=seed)
        )
        scheduler = ASHAScheduler(
            time_attr="epoch", max_t=MAX_EPOCHS, grace_period=1, reduction_factor=REDUCTION_FACTOR
        )
        tuner = tune.Tuner(
            trainable,
            param_space={name: tune.choice(options) for name, options in slots},
            tune_config=tune.TuneConfig(
                metric="val_acc", mode="max", search_alg=search_alg, scheduler=scheduler, num_samples=n_trials,
                max_concurrent_trials=1,
            ),
            run_config=tune.RunConfig(storage_path=str(Path(os.environ.get("TMPDIR", "/tmp")) / "curve-peers-ray"),
                                      name=f"{searcher}-{seed}-{time.time_ns()}", verbose=0),
        )  # fmt: skip
        results = tuner.fit()
        frames = sorted(
            ((result.metrics_dataframe, result.config) for result in results if result.metrics_dataframe is not None),
            key=lambda pair: pair[0]["timestamp"].min(),
        )  # one trial at a time: started in this order
        record = Record(table)
        for frame, config in frames:
            record.add({name: config[name] for name, _ in slots}, int(frame["epoch"].max()))
        return record

    return run


METHODS: dict[str, tuple[Callable[[CurveTable, int, int], Record], str]] = {
    "optuna-hyperband": (
        _optuna("hyperband", "tpe"),
        "Optuna TPESampler + HyperbandPruner(min_resource=1, max_resource=27, reduction_factor=3)",
    ),
    "optuna-sha": (
        _optuna("sha", "tpe"),
        "Optuna TPESampler + SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)",
    ),
    "optuna-lmsearcher-sha": (
        _optuna("sha", "lmsearcher"),
        "LMSearcherSampler (the default ranker inside Optuna) + SuccessiveHalvingPruner(min_resource=1, rf=3)",
    ),
    "optuna-random": (_optuna("none", "random"), "Optuna RandomSampler, no pruner (27 epochs per trial)"),
    "syne-asha": (_syne("asha"), "Syne Tune baselines.ASHA (random searcher, grace_period=1, max_t=27, rf=3)"),
    "syne-bohb": (_syne("bohb"), "Syne Tune baselines.BOHB (KDE searcher, grace_period=1, max_t=27, rf=3)"),
    "ray-lmsearcher-asha": (
        _ray("lmsearcher"),
        "Ray Tune: LMSearcherSearch (the default ranker) + ASHAScheduler(grace_period=1, max_t=27, rf=3), one trial "
        "at a time",
    ),
    "ray-random-asha": (
        _ray("random"),
        "Ray Tune: random search (BasicVariantGenerator) + ASHAScheduler(grace_period=1, max_t=27, rf=3), one trial "
        "at a time",
    ),
}


def summarize_run(table: CurveTable, trials: list[Trial]) -> dict[str, Any]:
    """One seed's totals: epochs spent, full trials, the answer (best full trial) and epochs to each target."""
    best = best_full(trials)
    return {
        "trials": len(trials),
        "epochs": trials[-1]["cum_epochs"] if trials else 0,
        "full_trials": sum(trial["full"] for trial in trials),
        "best_full_ncode": best["ncode"] if best else None,
        "best_full_val_acc": best["last"] if best else None,
        "best_full_test_acc": table.rows[best["ncode"]]["test_acc"] if best else None,
        "epochs_to_target": {str(target): epochs_to_target(trials, target) for target in TARGETS},
    }


def library_version(method: str) -> str:
    module = {"syne": "syne_tune", "ray": "ray"}.get(method.split("-")[0], "optuna")
    return f"{module} {__import__(module).__version__}"


def run_method(table: CurveTable, method: str, seeds: list[int], n_trials: int) -> dict[str, Any]:
    """Every seed of one method, with the trials, a per-seed summary and the wall time."""
    runner, description = METHODS[method]
    runs, start = [], time.perf_counter()
    for seed in seeds:
        seed_start = time.perf_counter()
        record = runner(table, seed, n_trials)
        runs.append(
            {
                "seed": seed,
                "wall_s": round(time.perf_counter() - seed_start, 2),
                "summary": summarize_run(table, record.trials),
                "trials": record.trials,
            }
        )
    return {
        "method": method,
        "description": description,
        "library": library_version(method),
        "table": str(table.directory.relative_to(ROOT) if table.directory.is_relative_to(ROOT) else table.directory),
        "max_epochs": MAX_EPOCHS,
        "trials_per_seed": n_trials,
        "seeds": seeds,
        "wall_s": round(time.perf_counter() - start, 2),
        "runs": runs,
    }


def _median(values: list[float | None]) -> float | None:
    """Median with None counted as worse than any number (never reached): None if the median is a None."""
    ordered = sorted(values, key=lambda value: (value is None, value or 0))
    middle = ordered[(len(ordered) - 1) // 2 : len(ordered) // 2 + 1]
    numbers = [value for value in middle if value is not None]
    return statistics.mean(numbers) if len(numbers) == len(middle) else None


def summary_lines(results: list[dict[str, Any]]) -> list[str]:
    """A table of medians over seeds, one line per method."""
    heads = [f"to {target}" for target in TARGETS]
    lines = [
        f"{'method':<17} {'seeds':>5} {'trials':>6} {'epochs':>7} {'full':>5} {'best val':>8} {'its test':>8} "
        + " ".join(f"{head:>11}" for head in heads),
    ]
    for result in results:
        summaries = [run["summary"] for run in result["runs"]]

        def med(key: str, rows: list[dict[str, Any]] = summaries) -> float | None:
            return _median([row[key] for row in rows])

        reach = []
        for target in TARGETS:
            values = [row["epochs_to_target"][str(target)] for row in summaries]
            median = _median(values)
            hits = sum(value is not None for value in values)
            reach.append(f"{'-' if median is None else f'{median:.0f}'} ({hits}/{len(values)})")
        lines.append(
            f"{result['method']:<17} {len(summaries):>5} {result['trials_per_seed']:>6} {med('epochs'):>7.0f} "
            f"{med('full_trials'):>5.1f} {med('best_full_val_acc'):>8.5f} {med('best_full_test_acc'):>8.5f} "
            + " ".join(f"{cell:>11}" for cell in reach)
        )
    lines.append(
        "medians over seeds; epochs = summed epochs of all trials; full = trials that ran 27 epochs; best val = the "
        "best full trial's val_acc, its test = that configuration's test_acc; 'to T' = summed epochs when the best "
        "full trial first reached val_acc T (seeds that reached it)"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--method", help=f"comma-separated, of: {', '.join(METHODS)}")
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,5")
    parser.add_argument("--trials", type=int, default=100, help="trials started per seed")
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="folder with space.yaml and curves.json")
    parser.add_argument("--out", type=Path, help="output JSON (one method only; default results/curve_peers_M.json)")
    parser.add_argument("--summarize", nargs="+", type=Path, metavar="JSON", help="print the table of saved results")
    args = parser.parse_args(argv)

    if args.summarize:
        print("\n".join(summary_lines([json.loads(path.read_text()) for path in args.summarize])))
        return 0
    methods = [method.strip() for method in (args.method or "").split(",") if method.strip()]
    unknown = [method for method in methods if method not in METHODS]
    if not methods or unknown:
        parser.error(f"--method takes one or more of {', '.join(METHODS)} (got {args.method!r})")
    if args.out and len(methods) > 1:
        parser.error("--out names one file: give one --method with it")
    table = CurveTable(args.table)
    results = []
    for method in methods:
        result = run_method(table, method, parse_seeds(args.seeds), args.trials)
        out = args.out or RESULTS / f"curve_peers_{method}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, separators=(",", ":")) + "\n")
        print(f"{method}: {len(result['seeds'])} seeds x {args.trials} trials in {result['wall_s']:.1f} s -> {out}")
        results.append(result)
    print("\n".join(summary_lines(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
