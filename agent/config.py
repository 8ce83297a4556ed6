"""The one typed configuration of a search: every option, its default, its help and its check.

Why one object: the CLI's flags, run files (``--config run.yaml``), the Python API
(:class:`agent.study.Study`) and the run store all read and write this dataclass, so a
default is written once, here. Each field's ``metadata`` holds its help text and CLI group;
:func:`agent.cli.main.search_parser` derives the flags from it.

A stored config never holds secrets: API keys are read from the environment by the rankers.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from agent.strategies.scalarisations import RULES
from agent.strategies.schedulers import SCHEDULERS
from evaluators.registry import TaskOptions

# baselines whose proposer does the searching; the ranker keeps its order
PROPOSER_DRIVEN = ("evolution", "tpe", "gp", "local-search", "nsga2")
BASELINE_RANKERS = ("random", "additive", "nearest", "nearest-mean", *PROPOSER_DRIVEN)
PROPOSERS = (
    "random", "mutation", "mixed", "mixed-gp", "mixed-tpe", "portfolio", "evolution", "tpe", "gp", "local-search",
    "nsga2", "generate",
)  # fmt: skip
DEFAULT_PROPOSER = "mixed"  # of the rankers that pick from a pool, but random search (BENCHMARKS.md §4, §8)
LEGACY_DEFAULT_PROPOSER = "mixed"  # what runs stored without a proposer used (they stored None until 2026-12)
MIXED_POOLS = ("mixed", "mixed-gp", "mixed-tpe", "portfolio")  # the proposers that read --random-fraction
NEAREST_READERS = ("nearest", "nearest-mean")  # the baselines that read --history-cap
LOCAL_FOLDER_PREFIXES = ("local", "vllm", "inprocess")  # ranker specs naming a model folder (the shipped one alone)
COLLM_READS_LLM = ("model", "base_url", "timeout_s", "llm_retries", "llm_backoff_s")  # CoLLM-NAS's share of them
STOPPED_AS = ("last", "worst", "omit")  # agent.loops.common.searcher_view
INFEASIBLE_AS = ("worst", "omit")  # agent.loops.common.searcher_view
SCALARISATIONS = ("auto", *RULES)  # auto: chosen per step between two of them (agent.loops.common)
STRATEGIES = ("lmsearcher", "collm")  # the LM-Searcher loop (loops/lmsearcher.py) or CoLLM-NAS (loops/collm.py)
BACKENDS = ("local", "ray")
MAX_COUNT = 10**9  # budgets, batches, pools, workers: far above any search, far below SQLite's integer limit
MODES = ("auto", "sync", "async")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the option and the fix."""


def option(
    default: Any, help: str, group: str = "search", flag: str | None = None, choices: tuple = (), cli: bool = True,
    const: str | None = None,
) -> Any:  # fmt: skip
    """A config field with what the CLI needs to offer it as a flag (``cli=False``: another flag sets it; ``const``:
    the value of the flag given without one)."""
    metadata = {"help": help, "group": group, "flag": flag, "choices": choices, "cli": cli, "const": const}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class SearchConfig:
    """Everything that defines a run."""

    # -- what to search
    task: str = option(
        "nas_bench_graph",
        "what to search: a built-in task, command (your training command), objective (a Python function), "
        "or a plugin MODULE:CLASS",
        group="task",
    )
    dataset: str | None = option(None, "the task's dataset (nb201: cifar10, cifar100, imagenet16-120)", "task")
    data: str | None = option(
        None,
        "benchmark folder (nb201, nb_asr), results table (table), images/+masks/ folder (sam_lora) "
        "or parallel corpus folder (hat_mt)",
        group="task",
    )
    space: str | dict | None = option(
        None, "YAML search space (table, command, objective); a run file may inline it", "task"
    )
    metric: str | None = option(
        None, "the metric to optimise (table, command, objective); again for each further objective, NAME:min or "
        "NAME:max (--metric val_acc --metric latency_ms:min): a run of several keeps a Pareto front", "task",
    )  # fmt: skip
    minimize: bool = option(False, "the metric is an error or a loss: lower is better", "task")
    objectives: list[str] = option(
        [], "objectives after the metric, NAME:min or NAME:max (on the command line, --metric again)", "task",
        flag="--metric", cli=False,
    )  # fmt: skip
    constraint: list[str] = option(
        [], "a constraint NAME<=NUMBER (or >=, <, >; repeatable), e.g. params<=5e6: results that break one are "
        "infeasible, never the best", group="task",
    )  # fmt: skip
    known_before: list[str] = option(
        [], "what is known of a configuration without evaluating it (repeatable): a table's column (params, flops), "
        "or MODULE:FUNCTION, a function of the configuration returning such metrics; a candidate that breaks a "
        "--constraint on one is dropped before it is evaluated", group="task",
    )  # fmt: skip
    scalarisation: str = option(
        "auto", "a run of several objectives: the one number rankers read each step. epsilon: a front member drawn "
        "per step sets limits on the other objectives and the score is the first one within them, the pool kept "
        "inside where they are known before evaluating; fronts: the non-dominated layer first, ParEGO's value "
        "within it; parego: random Chebyshev weights per step alone; auto: epsilon where every other objective is "
        "known before evaluating (NAS-Bench-Graph, --known-before), fronts otherwise", group="task",
        choices=SCALARISATIONS,
    )  # fmt: skip
    infeasible_as: str = option(
        "worst", "what rankers read of an infeasible result: the worst finished score, however good its own, or "
        "nothing (it is still never proposed again)", group="task", choices=INFEASIBLE_AS,
    )  # fmt: skip
    evaluate_known_infeasible: bool = option(
        False, "evaluate candidates known to break a --constraint anyway, as Optuna's constrained samplers do, "
        "instead of dropping them (to compare, or to record where the limit runs)", group="task",
    )  # fmt: skip
    command: str | None = option(
        None, "command: the shell command to run per evaluation, with {slot} placeholders", group="task"
    )
    workdir: str | None = option(None, "command: root of the per-evaluation working folders", group="task")
    gpus: str | None = option(None, "command: GPU ids shared out to workers, e.g. 0,1,2,3 ({gpu})", group="task")
    objective: str | None = option(None, "objective: the function to call, as module:function", group="task")
    # -- how to search
    ranker: str = option(
        "inprocess",
        "who picks candidates: inprocess (default: the shipped LM-Searcher-tiny scored in this process, expected "
        "grades), inprocess:PATH, local[:PATH] (served by a managed transformers serve: greedy digits), "
        "vllm[:PATH] (served by vLLM), llm (with --base-url/--model), openai:MODEL, a baseline: "
        f"{', '.join(BASELINE_RANKERS)}, or your own as MODULE:NAME (a Ranker class, or a function returning one)",
    )
    proposer: str | None = option(
        None,
        "candidate pool: mixed (the default but for --ranker random: random codes and mutations of the best), "
        "random, mutation, mixed-gp / mixed-tpe (mixed plus a GP / TPE suggestion), portfolio (mixed, but every "
        "--gp-every-th step Bayesian optimisation's suggestion alone), evolution, tpe, gp, local-search, nsga2 "
        "(tpe and gp are multi-objective in a run of several objectives), generate",
    )
    strategy: str = option(
        "lmsearcher", "lmsearcher (a ranker picks from a pool) or collm (CoLLM-NAS)", choices=STRATEGIES
    )
    budget: int = option(100, "number of evaluations")
    batch: int = option(1, "evaluations per step (k)")
    pool_size: int = option(10, "candidates the ranker sees per step")
    random_start: int = option(
        0, "pick at random until this many evaluations have a score, then let the ranker pick (as samplers' "
        "startup trials; the LLM ranker picks at random below 2 scores in any case)",
    )  # fmt: skip
    random_fraction: float = option(0.5, "share of random codes in a mixed pool")
    gp_every: int = option(2, "portfolio: every Nth step evaluates Bayesian optimisation's suggestion")
    population: int = option(30, "regularized evolution population P")
    sample_size: int = option(10, "regularized evolution tournament size S")
    seed: int = option(0, "seed of every random choice of the search")
    target: float | None = option(None, "stop once the best score reaches this value (any strategy)")
    simulated_cost_s: float = option(0.0, "pad each evaluation to this many seconds", flag="--simulated-cost")
    # -- multi-fidelity
    scheduler: str = option(
        "none", "what continues: asha, hyperband or median stop evaluations that report poor intermediate values "
        "(epochs) early; none runs every evaluation to its end", group="fidelity", choices=SCHEDULERS,
    )  # fmt: skip
    min_fidelity: float = option(1.0, "first rung (asha, hyperband), first step judged (median)", "fidelity")
    max_fidelity: float | None = option(
        None, "the step a full evaluation ends at, e.g. its last epoch (default: what the task declares)", "fidelity"
    )
    reduction_factor: float = option(3.0, "asha, hyperband: keep the best 1/eta at each rung", group="fidelity")
    fidelity_budget: float | None = option(
        None, "stop starting evaluations once the steps (epochs) of all evaluations add up to this", "fidelity"
    )
    time_budget: float | None = option(
        None, "stop starting evaluations after this many wall seconds (all sessions of the run)", "fidelity"
    )
    stopped_as: str = option(
        "last", "what rankers read of a stopped evaluation: its last value, the worst finished score, or nothing",
        group="fidelity", choices=STOPPED_AS,
    )  # fmt: skip
    final_top: int = option(
        0, "after the search, train the best K finished configurations again (the paper's final stage; 0: none)",
        group="fidelity",
    )  # fmt: skip
    final_fidelity: float | None = option(
        None, "final stage: how long to train ({fidelity}, trial.fidelity, --steps); default: as the search did",
        group="fidelity",
    )  # fmt: skip
    final_seeds: int = option(3, "final stage: seeds per configuration (the pick is the best mean)", "fidelity")
    # -- what the run starts from (agent/runs/warm_start.py)
    warm_start: list[str] = option(
        [], "known results of this task (repeatable): a run (RUN_ID or OTHER.db:RUN_ID), a results .csv/.json, or a "
        ".yaml/.json list of configurations to evaluate first; results enter the history without spending the budget",
        group="warm",
    )  # fmt: skip
    transfer: list[str] = option(
        [], "a run or results file of the same space on another dataset or task (repeatable): its best "
        "configurations are evaluated first, its scores never mixed into this run's", group="warm",
    )  # fmt: skip
    transfer_top: int = option(5, "how many of each --transfer source's best configurations to evaluate first", "warm")
    # -- training tasks
    model_path: str | None = option(
        None, "SD-1.5 folder (diffusers), SamModel folder, or super-net .pt (hat_mt)", group="training"
    )
    clip_path: str | None = option(None, "CLIPModel folder scoring the images (diffusion_lora)", group="training")
    concept_dir: str | None = option(None, "concept images, captions in <stem>.txt (diffusion_lora)", group="training")
    prompts: str | None = option(None, "validation prompts, one per line (diffusion_lora)", group="training")
    steps: int | None = option(None, "steps per evaluation (LoRA tasks); super-net steps (hat_mt)", group="training")
    report_every: int | None = option(
        None, "LoRA tasks: score the model every N training steps (batches) and report it, so that --scheduler can "
        "stop it early (one extra validation each)", group="training",
    )  # fmt: skip
    device: str | None = option(None, "cpu, cuda or cuda:N (default: cuda when present)", group="training")
    eval_timeout: float | None = option(
        None, "seconds per evaluation; longer ones are recorded as failed", group="training"
    )
    latency_limit_ms: float | None = option(
        None, "hat_mt: slower sub-transformers are infeasible (default 500)", group="training"
    )
    hat_scale: int | None = option(None, "hat_mt: HAT's sizes divided by this (default 16)", group="training")
    # -- parallel evaluation
    workers: int = option(1, "evaluations at once", group="parallel")
    backend: str = option(
        "local", "local: worker processes; ray: Ray actors (pip install '.[distributed]')", "parallel", choices=BACKENDS
    )
    ray_address: str | None = option(
        None, "an existing Ray cluster; default: $RAY_ADDRESS, else a local Ray", "parallel"
    )
    mode: str = option(
        "auto", "async: decide whenever a worker is free; sync: steps of --batch; auto: async when --workers > 1 "
        "and --batch is 1", "parallel", choices=MODES,
    )  # fmt: skip
    eval_retries: int = option(2, "retries of an evaluation whose worker died", group="parallel")
    worker_cpus: float | None = option(None, "CPUs per Ray worker (default: what the task declares)", "parallel")
    worker_gpus: float | None = option(None, "GPUs per Ray worker (default: what the task declares)", "parallel")
    # -- experiment tracking (agent/runs/mlflow_tracking.py)
    mlflow: str | None = option(
        None, "log the run to MLflow at this tracking URI, a child run per evaluation (pip install -e '.[mlflow]'); "
        "alone: $MLFLOW_TRACKING_URI, else ./mlflow.db", group="tracking", const="",
    )  # fmt: skip
    # -- LLM rankers
    base_url: str | None = option(None, "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (vLLM)", "llm")
    model: str | None = option(None, "model name the endpoint serves", group="llm")
    temperature: float = option(0.0, "sampling temperature", group="llm")
    max_tokens: int = option(64, "answer length limit", group="llm")
    timeout_s: float = option(60.0, "seconds per request", group="llm", flag="--timeout")
    prompt_format: str | None = option(
        None, "compact (default), paper, near (LM-Searcher-tiny's), grade or choice; a local model's card sets its own",
        group="llm",
    )  # fmt: skip
    history_cap: int | None = option(
        None, "history items in the prompt, best first (default 200; nearest readers: 24)", group="llm"
    )
    max_reasks: int = option(3, "re-asks with a fresh pool before falling back", group="llm")
    llm_retries: int = option(4, "retries of timeouts, 429 and 5xx per request", group="llm")
    llm_backoff_s: float = option(1.0, "first wait before a retry, doubled each time", "llm", flag="--llm-backoff")
    parallel_requests: int = option(10, "one-question-per-candidate formats: questions in flight", group="llm")
    model_card: str | None = option(
        None, "the served model's card, its folder or its lmsearcher.json: sets --prompt-format and --history-cap "
        "(flags win) and the near format's slot weighting; default: a local model's own card", group="llm",
    )  # fmt: skip
    fallback_limit: int = option(
        5, "stop the run when this many decisions in a row fall back to a random pick (0: never)", group="llm"
    )
    fallback_share: float = option(
        0.5, "stop the run when more than this share of decisions fell back, from the 10th on (0: never)", group="llm"
    )
    vllm_python: str | None = option(
        None, "--ranker vllm[:PATH]: the Python that has vLLM (its own venv); default $LMSEARCHER_VLLM_PYTHON, "
        "else the vllm command on PATH", group="llm",
    )  # fmt: skip
    # -- CoLLM-NAS
    navigator_model: str | None = option(None, "the Navigator's model (default: --model)", group="collm")
    navigator_base_url: str | None = option(None, "the Navigator's endpoint (default: --base-url)", group="collm")
    generator_model: str | None = option(None, "the Generator's model (default: --model)", group="collm")
    generator_base_url: str | None = option(None, "the Generator's endpoint (default: --base-url)", group="collm")
    collm_batch: int = option(10, "candidates per round", group="collm")
    collm_temperature: float = option(0.6, "sampling temperature (the paper's)", group="collm")
    collm_max_tokens: int = option(1024, "answer length limit per call", group="collm")
    constraints: str | None = option(None, "resource constraints in words, shown to both models", group="collm")
    navigator_rounds: int = option(40, "rounds of the Navigator's conversation sent back (the first always)", "collm")

    # -- derived views -------------------------------------------------------------------------

    def task_options(self) -> TaskOptions:
        """What the task's evaluator is built from (in the driver and in every worker)."""
        names = {f.name for f in fields(TaskOptions)}
        options = TaskOptions(**{name: getattr(self, name) for name in names if hasattr(self, name)})
        options.fidelity = self.max_fidelity  # a search trains to its top fidelity; the final stage to its own
        return options

    def llm_options(self) -> dict[str, Any]:
        """The LLM ranker's settings; None means 'not given' (a local model's card may set it)."""
        keys = ("base_url", "model", "temperature", "max_tokens", "timeout_s", "prompt_format", "history_cap",
                "model_card", "fallback_limit", "fallback_share")  # fmt: skip
        return {**{key: getattr(self, key) for key in keys}, "max_reasks": self.max_reasks,
                "retries": self.llm_retries, "backoff_s": self.llm_backoff_s,
                "parallel_requests": self.parallel_requests, "vllm_python": self.vllm_python}  # fmt: skip

    def collm_options(self) -> dict[str, Any]:
        keys = ("navigator_model", "navigator_base_url", "generator_model", "generator_base_url")
        return {**{key: getattr(self, key) for key in keys}, "batch": self.collm_batch,
                "temperature": self.collm_temperature, "max_tokens": self.collm_max_tokens,
                "target": self.target, "constraints": self.collm_constraints(),
                "navigator_rounds": self.navigator_rounds}  # fmt: skip

    def collm_constraints(self) -> str | None:
        """What CoLLM-NAS's two models are told of the limits: the words of --constraints and, as numbers, each
        --constraint that makes a result infeasible."""
        hard = [f"{spec} (a hard limit: a result that breaks it is infeasible)" for spec in self.constraint]
        told = [text for text in (self.constraints, *hard) if text]
        return "; ".join(told) if told else None

    def worker_resources(self) -> dict[str, float]:
        """Ray actor options given on the command line; {} means what the evaluator declares."""
        given = (("num_cpus", self.worker_cpus), ("num_gpus", self.worker_gpus))
        return {key: value for key, value in given if value is not None}

    def asynchronous(self) -> bool:
        """Whether the asynchronous loop (agent/loops/asynchronous.py) drives this run."""
        return self.mode == "async" or (self.mode == "auto" and self.workers > 1 and self.batch == 1)

    def proposer_name(self) -> str:
        """The pool's proposer: the baseline's own, random search's random pool, or else the default."""
        if self.ranker in PROPOSER_DRIVEN:
            return self.ranker
        return self.proposer or ("random" if self.ranker == "random" else DEFAULT_PROPOSER)

    # -- checks ------------------------------------------------------------------------------

    def ignored_options(self) -> list[str]:
        """The options set away from their default that this run would never read, each said with what reads
        it: a run must not look tuned by an option that changed nothing. Checked when a run is created."""
        defaults = SearchConfig()
        return [
            f"{flag(name)} {getattr(self, name)!r} applies to {reader}"
            for name, (read, reader) in self._readers().items()
            if not read and getattr(self, name) != getattr(defaults, name)
        ]

    def _readers(self) -> dict[str, tuple[bool, str]]:
        """For each option that only some runs read: whether this one does, and which runs do."""
        lmsearcher, pool = self.strategy == "lmsearcher", self.proposer_name()
        llm = lmsearcher and is_llm_ranker(self.ranker)
        llm_rankers = "an LLM ranker (inprocess, local, vllm, llm, openai:MODEL)"
        scheduled, halving = self.scheduler != "none", self.scheduler in ("asha", "hyperband")
        budgeted = self.fidelity_budget is not None
        readers = {
            "min_fidelity": (scheduled, "--scheduler asha, hyperband or median"),
            "reduction_factor": (halving, "--scheduler asha or hyperband"),
            "max_fidelity": (
                halving or budgeted or self.task in ("command", "objective"),
                "--scheduler asha or hyperband, --fidelity-budget, or --task command or objective ({fidelity})",
            ),
            "report_every": (self.task in ("diffusion_lora", "sam_lora"), "--task diffusion_lora or sam_lora"),
            "final_fidelity": (self.final_top > 0, "--final-top K (a final stage)"),
            "final_seeds": (self.final_top > 0, "--final-top K (a final stage)"),
            "stopped_as": (lmsearcher and scheduled, "--scheduler asha, hyperband or median (LM-Searcher loop)"),
            "gp_every": (lmsearcher and pool == "portfolio", f"--proposer portfolio (this run's pool: {pool})"),
            "population": (lmsearcher and pool == "evolution", "regularized evolution (--ranker evolution)"),
            "sample_size": (lmsearcher and pool == "evolution", "regularized evolution (--ranker evolution)"),
            "random_start": (
                lmsearcher and self.ranker not in (*PROPOSER_DRIVEN, "random") and pool != "generate",
                "a ranker that picks from a pool (not random, generate or a proposer-driven baseline, whose "
                "startup is its own)",
            ),
            "random_fraction": (
                lmsearcher and pool in MIXED_POOLS, f"a mixed pool: --proposer {', '.join(MIXED_POOLS)} "
                f"(this run's pool: {pool})",
            ),
            "history_cap": (
                llm or (lmsearcher and self.ranker in NEAREST_READERS), f"{llm_rankers} or --ranker nearest[-mean]"
            ),
            "vllm_python": (llm and self.ranker.partition(":")[0] == "vllm", "--ranker vllm[:PATH]"),
            "known_before": (bool(self.constraint or self.objectives), "a run with a --constraint or objectives"),
            "evaluate_known_infeasible": (bool(self.constraint), "a run with a --constraint"),
            "infeasible_as": (lmsearcher, "--strategy lmsearcher"),
            "scalarisation": (lmsearcher and bool(self.objectives), "a run of several objectives (LM-Searcher loop)"),
        }  # fmt: skip
        for name in ("ranker", "proposer", "pool_size", "batch", "warm_start", "transfer"):
            readers[name] = (lmsearcher, "--strategy lmsearcher (CoLLM-NAS proposes and picks with its two LLMs)")
        readers["transfer_top"] = (lmsearcher and bool(self.transfer), "--transfer SOURCE")
        for f in fields(self):
            if f.metadata["group"] == "collm":
                readers[f.name] = (not lmsearcher, "--strategy collm")
            elif f.metadata["group"] == "llm" and f.name not in readers:
                shared = f.name in COLLM_READS_LLM
                readers[f.name] = (llm or (shared and not lmsearcher), llm_rankers + " or --strategy collm" * shared)
        return readers

    def check_new(self) -> None:
        """The rules of a new run: an option it would not read is named first (it is why another rule may fail),
        then :meth:`check`. Runs stored before the first rule still resume: it is not part of ``check``."""
        ignored = self.ignored_options()
        if ignored:
            raise ConfigError(f"{'; '.join(ignored)}. This run would not read it: drop it, or choose what reads it")
        self.check()

    def check(self) -> None:
        """Every rule a run must satisfy before it starts; raises ConfigError naming the option."""
        self._check_types()
        positive = {"budget": self.budget, "batch": self.batch, "pool_size": self.pool_size, "workers": self.workers}
        for name, value in positive.items():
            if not 1 <= value <= MAX_COUNT:
                raise ConfigError(f"{flag(name)} must be 1 to {MAX_COUNT:,}, got {value}")
        if self.eval_timeout is not None and not self.eval_timeout > 0:
            raise ConfigError(f"--eval-timeout must be a positive number of seconds, got {self.eval_timeout}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")
        if self.ranker in PROPOSER_DRIVEN and self.proposer not in (None, self.ranker):
            raise ConfigError(f"--ranker {self.ranker} is a proposer-driven baseline; drop --proposer {self.proposer}")
        if self.proposer is not None and self.proposer not in PROPOSERS:
            raise ConfigError(f"unknown proposer {self.proposer!r}; valid: {', '.join(PROPOSERS)}")
        if self.batch > self.pool_size and self.ranker not in PROPOSER_DRIVEN:
            raise ConfigError(
                f"--batch {self.batch} is larger than --pool-size {self.pool_size}: the ranker picks --batch codes "
                "out of the pool; raise --pool-size or lower --batch"
            )
        if not 0 <= self.random_start <= MAX_COUNT:
            raise ConfigError(f"--random-start must be 0 to {MAX_COUNT:,}, got {self.random_start}")
        if self.history_cap is not None and self.history_cap < 1:
            raise ConfigError(f"--history-cap must be at least 1, got {self.history_cap}")
        if self.gp_every < 1:
            raise ConfigError(f"--gp-every must be at least 1, got {self.gp_every}")
        if not 0.0 <= self.random_fraction <= 1.0:
            raise ConfigError(f"--random-fraction must be in [0, 1], got {self.random_fraction}")
        if not 1 <= self.sample_size <= self.population:
            raise ConfigError(
                f"regularized evolution needs 1 <= --sample-size <= --population, got {self.sample_size} and "
                f"{self.population}"
            )
        if self.eval_retries < 0:
            raise ConfigError(f"--eval-retries must be 0 or more, got {self.eval_retries}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.mode == "async" and self.batch > 1:
            raise ConfigError("--mode async decides one code at a time; drop --batch (or use --mode sync)")
        if self.strategy != "lmsearcher" and (self.workers > 1 or self.mode == "async"):
            raise ConfigError(f"--workers and --mode async apply to --strategy lmsearcher, not {self.strategy}")
        if self.ray_address and self.backend != "ray":
            raise ConfigError("--ray-address needs --backend ray")
        if self.mlflow and urlsplit(self.mlflow).password:
            raise ConfigError(
                "--mlflow URI holds a password, which would be stored with the run: drop it from the URI and set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead"
            )
        self._check_fidelity()

    def _check_fidelity(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler {self.scheduler!r}; valid: {', '.join(SCHEDULERS)}")
        if self.stopped_as not in STOPPED_AS:
            raise ConfigError(f"unknown --stopped-as {self.stopped_as!r}; valid: {', '.join(STOPPED_AS)}")
        if self.scalarisation not in SCALARISATIONS:
            raise ConfigError(f"unknown --scalarisation {self.scalarisation!r}; valid: {', '.join(SCALARISATIONS)}")
        if self.infeasible_as not in INFEASIBLE_AS:
            raise ConfigError(f"unknown --infeasible-as {self.infeasible_as!r}; valid: {', '.join(INFEASIBLE_AS)}")
        if not self.min_fidelity > 0:
            raise ConfigError(f"--min-fidelity must be above 0, got {self.min_fidelity}")
        if self.max_fidelity is not None and not self.max_fidelity > 0:
            raise ConfigError(f"--max-fidelity must be above 0, got {self.max_fidelity}")
        halving = self.scheduler in ("asha", "hyperband")
        if halving and self.max_fidelity is not None and not self.max_fidelity > self.min_fidelity:
            raise ConfigError(
                f"--max-fidelity ({self.max_fidelity}) must be above --min-fidelity ({self.min_fidelity}): "
                f"--scheduler {self.scheduler} halves between them"
            )
        if not self.reduction_factor > 1:
            raise ConfigError(f"--reduction-factor must be above 1, got {self.reduction_factor}")
        if self.final_top < 0 or self.final_seeds < 1:
            given = f"got {self.final_top} and {self.final_seeds}"
            raise ConfigError(f"--final-top must be 0 or more and --final-seeds at least 1, {given}")
        if not 1 <= self.transfer_top <= MAX_COUNT:
            raise ConfigError(f"--transfer-top must be 1 to {MAX_COUNT}, got {self.transfer_top}")
        if self.report_every is not None and self.report_every < 1:
            raise ConfigError(f"--report-every must be at least 1 training step, got {self.report_every}")
        for name in ("fidelity_budget", "time_budget", "final_fidelity"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{flag(name)} must be above 0, got {value}")

    def _check_types(self) -> None:
        """Run files and the Python API bypass argparse: check each value against its annotation."""
        hints = typing.get_type_hints(SearchConfig)
        for f in fields(self):
            value, allowed = getattr(self, f.name), _types_of(hints[f.name])
            if isinstance(value, bool) and bool not in allowed:
                ok = False
            else:
                ok = isinstance(value, allowed) or (float in allowed and isinstance(value, int))
            if not ok:
                names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
                raise ConfigError(f"{flag(f.name)} must be {names}, got {value!r}")

    # -- storage and run files ---------------------------------------------------------------

    @classmethod
    def from_mapping(cls, values: dict[str, Any], source: str = "config") -> SearchConfig:
        """A config from keys that are field names or flag names (``pool-size``, ``--pool-size``)."""
        known = {f.name for f in fields(cls)}
        by_flag = {flag(f.name).removeprefix("--").replace("-", "_"): f.name for f in fields(cls) if f.metadata["cli"]}
        given: dict[str, Any] = {}
        for key, value in values.items():
            name = str(key).removeprefix("--").replace("-", "_")
            name = by_flag.get(name, name)
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else "; see python main.py --help"
                raise ConfigError(f"{source}: unknown option {key!r}{hint}")
            given[name] = value
        if isinstance(given.get("metric"), list | tuple):  # --metric given more than once, or a list in a run file
            given.update(metrics_of(given["metric"], given.get("minimize", False), source))
        config = cls(**given)
        config._check_types()
        return config

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> SearchConfig:
        """The config a run was stored with; runs of earlier versions kept some options in nested dicts."""
        flat = {key: value for key, value in stored.items() if not isinstance(value, dict) or key == "space"}
        flat.update(stored.get("task_options") or {})
        legacy_llm = {"retries": "llm_retries"}
        flat.update({legacy_llm.get(k, k): v for k, v in (stored.get("ranker_options") or {}).items()})
        legacy_collm = {"batch": "collm_batch", "temperature": "collm_temperature", "max_tokens": "collm_max_tokens"}
        flat.update({legacy_collm.get(k, k): v for k, v in (stored.get("collm_options") or {}).items()})
        resources = stored.get("worker_resources") or {}
        flat.update({"worker_cpus": resources.get("num_cpus"), "worker_gpus": resources.get("num_gpus")})
        if flat.get("proposer") is None and flat.get("ranker") not in (*PROPOSER_DRIVEN, "random"):
            flat["proposer"] = LEGACY_DEFAULT_PROPOSER  # a resumed run keeps the pool it started with
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in flat.items() if key in known})

    def stored(self) -> dict[str, Any]:
        """Every option, the proposer resolved: a later change of the default must not change a stored run."""
        stored = asdict(self)
        if self.ranker not in PROPOSER_DRIVEN:
            stored["proposer"] = self.proposer_name()
        return stored

    def changed(self, **overrides: Any) -> SearchConfig:
        return dataclasses.replace(self, **overrides)


def metrics_of(metrics: list | tuple, minimize: bool, source: str) -> dict[str, Any]:
    """``metric``, ``minimize`` and ``objectives`` from a list of objectives, the first being the metric:
    ``["val_acc", "latency_ms:min"]``."""
    if not metrics or not all(isinstance(text, str) for text in metrics):
        raise ConfigError(f"{source}: --metric takes names such as val_acc or latency_ms:min, got {list(metrics)!r}")
    first, _, direction = metrics[0].partition(":")
    if direction not in ("", "min", "max"):
        raise ConfigError(f"{source}: --metric {metrics[0]!r}: write NAME, NAME:max or NAME:min")
    if direction == "max" and minimize:
        raise ConfigError(f"{source}: --metric {metrics[0]} and --minimize disagree; give one direction")
    return {"metric": first, "minimize": minimize or direction == "min", "objectives": list(metrics[1:])}


def is_llm_ranker(spec: str) -> bool:
    """Whether ``spec`` names an LLM ranker: ``llm``, ``openai:MODEL``, or ``local``, ``vllm`` or ``inprocess``
    with or without ``:PATH``. Matched by the name before the colon, so ``local-search`` (a baseline) or a
    misspelt ``local-serch`` is not taken for a local model."""
    kind, colon, _ = spec.partition(":")
    return spec == "llm" or (kind == "openai" and bool(colon)) or kind in LOCAL_FOLDER_PREFIXES


def flag(name: str) -> str:
    """The CLI flag of a config field."""
    metadata = next(f.metadata for f in fields(SearchConfig) if f.name == name)
    return metadata.get("flag") or "--" + name.replace("_", "-")


def _types_of(hint: Any) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(typing.get_origin(arg) or arg for arg in typing.get_args(hint))
    return (typing.get_origin(hint) or hint,)


def read_run_file(path: str | Path) -> dict[str, Any]:
    """The keys of a run file (YAML mapping); bad files raise ConfigError naming the problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read run file {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"run file {path} is not valid YAML: {error}") from None
    if data is None:
        raise ConfigError(f"run file {path} is empty; write options in it (key: value), or leave --config out")
    if not isinstance(data, dict):
        raise ConfigError(f"run file {path} must be a mapping of options (key: value), got {type(data).__name__}")
    return data


ALWAYS_WRITTEN = ("task", "budget", "seed")  # what a run is, said even at their defaults


def run_file_text(config: SearchConfig, extra: dict[str, Any] | None = None) -> str:
    """A run file that reproduces ``config``: the options that differ from the defaults (and the task, budget and
    seed), grouped as in ``--help``; a file of every option would bury them in defaults."""
    defaults = SearchConfig()
    lines = [
        "# LM-Searcher run file: python main.py --config THIS_FILE (flags given as well override it)",
        "# options not listed are at their defaults (python main.py --help)",
    ]
    for key, value in (extra or {}).items():
        lines.append(yaml.safe_dump({key: value}, sort_keys=False).rstrip())
    group = None
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name not in ALWAYS_WRITTEN and value == getattr(defaults, f.name):
            continue
        if f.metadata["group"] != group:
            group = f.metadata["group"]
            lines.append(f"# -- {group}")
        lines.append(yaml.safe_dump({f.name: value}, sort_keys=False, width=1000).rstrip())
    return "\n".join(lines) + "\n"
