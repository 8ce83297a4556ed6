"""Reading finished or running searches back: summaries, history tables, plots, exports."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any

from agent.config import SearchConfig
from agent.runs.store import RunStore, pairs_of
from prompts.grade import parse_grade
from tools.objectives import Objective, pareto_indices, parse_objective

LOOKUP_TASKS = ("nb201", "nas_bench_graph", "table", "nb_asr")  # a finite results table: every score is known
STATUS_STYLES = {"ok": {"s": 10, "color": "0.6"}, "infeasible": {"s": 14, "color": "C3", "marker": "x"}}
CODE_PREFIX = "c:"  # the CSV's ``code`` column: an NCode no CSV reader takes for a number (00667, 1e5, nan)


def best_so_far(evaluations: list[dict[str, Any]], maximize: bool) -> list[float | None]:
    """The best score after each evaluation (None until the first finished one; a stopped one never counts)."""
    best: float | None = None
    trajectory = []
    for row in evaluations:
        score = row["score"] if row.get("status", "ok") == "ok" else None
        if score is not None and (best is None or (score > best if maximize else score < best)):
            best = score
        trajectory.append(best)
    return trajectory


def search_method(run: dict[str, Any]) -> dict[str, str]:
    """The ranker and proposer the user chose, read from the run's stored config: the decisions table
    holds the rankers' internal names (``first`` for the evolution and TPE baselines)."""
    config = SearchConfig.from_stored(run["config"])
    if config.strategy == "collm":
        return {
            "ranker": f"collm navigator {config.navigator_model or config.model or ''}".strip(),
            "proposer": f"collm generator {config.generator_model or config.model or ''}".strip(),
        }
    ranker = f"{config.ranker} {config.model}" if config.ranker == "llm" and config.model else config.ranker
    return {"ranker": ranker, "proposer": config.proposer_name()}


def decision_summary(decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """How the ranker behaved: fallback rate, re-asks, latency and token use."""
    if not decisions:
        return {"decisions": 0}
    latencies = [d["latency_s"] for d in decisions if d["latency_s"] is not None]
    prompt_tokens = [d["prompt_tokens"] for d in decisions if d["prompt_tokens"] is not None]
    return {
        "decisions": len(decisions),
        "fallback_rate": sum(d["fallback"] for d in decisions) / len(decisions),
        "retries": sum(d["retries"] for d in decisions),
        "median_latency_s": statistics.median(latencies) if latencies else None,
        "median_prompt_tokens": statistics.median(prompt_tokens) if prompt_tokens else None,
    }


def llm_call_summary(calls: list[dict[str, Any]], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """CoLLM-NAS: LLM calls per role, tokens, latency, and the Coordinator's drops and top-ups (empty otherwise)."""
    if not calls and not rounds:
        return {}
    roles: dict[str, int] = {}
    for call in calls:
        roles[call["role"]] = roles.get(call["role"], 0) + 1
    latencies = [c["latency_s"] for c in calls if c["latency_s"] is not None]
    return {
        "llm_calls": ", ".join(f"{count} {role}" for role, count in roles.items()),
        "failed_llm_calls": sum(c["error"] is not None for c in calls),
        "prompt_tokens": sum(c["prompt_tokens"] or 0 for c in calls),
        "completion_tokens": sum(c["completion_tokens"] or 0 for c in calls),
        "median_llm_latency_s": statistics.median(latencies) if latencies else None,
        "rounds": len(rounds),
        "invalid_candidates": sum(r["invalid"] for r in rounds),
        "duplicate_candidates": sum(r["duplicates"] for r in rounds),
        "topped_up": sum(r["topped_up"] for r in rounds),
        "rejected_before_evaluation": sum(len(pairs_of(r, "rejected")) for r in rounds),
        "walked_inside_constraints": sum(len(pairs_of(r, "repaired")) for r in rounds),
    }


def decision_rows(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each decision's pool, pick and answers. A one-question-per-candidate format (grade, near) stores one
    answer per candidate, in pool order, when nothing was re-asked: those are paired with their candidates."""
    rows = []
    for decision in decisions:
        pool, chosen, raw = json.loads(decision["pool"]), json.loads(decision["chosen"]), decision["raw_answer"]
        answers = raw.split("\n---\n") if raw else []
        paired = len(pool) > 1 and len(answers) == len(pool) and not decision["retries"]
        per_candidate = dict(zip(pool, answers, strict=True)) if paired else {}
        rows.append(
            {
                "iteration": decision["iteration"],
                "picked_by": decision["ranker"],
                "pool": pool,
                "chosen": chosen,
                "grades": {code: parse_grade(text) for code, text in per_candidate.items()},
                "answers": per_candidate,
                "raw_answer": None if paired else raw,
                "fallback": bool(decision["fallback"]),
                "retries": decision["retries"],
                "dropped": pairs_of(decision, "dropped"),
                "repaired": pairs_of(decision, "repaired"),
            }
        )
    return rows


def save_figure(figure: Any, path: Path) -> Path:
    """Save in the format the name asks for when matplotlib knows it, else PNG (``plot.out`` is a PNG too)."""
    suffix = path.suffix.lstrip(".").lower()
    fmt = suffix if suffix in figure.canvas.get_supported_filetypes() else "png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format=fmt)
    return path


def finished_figure(figure: Any, path: Path) -> Path:
    """Lay a figure out, save it and close it (closed even when saving fails)."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    try:
        return save_figure(figure, path)
    finally:
        plt.close(figure)


def plot_trajectory(store: RunStore, run_id: str, path: Path) -> Path:
    """Best-so-far versus evaluations, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = store.get_run(run_id)
    rows = list(store.evaluations(run_id))
    scores = [row["score"] for row in rows]
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=120)
    axis.scatter(range(1, len(rows) + 1), scores, s=8, alpha=0.35, label="evaluation")
    axis.plot(range(1, len(rows) + 1), best_so_far(rows, bool(run["maximize"])), color="C3", label="best so far")
    axis.set_xlabel("evaluations")
    axis.set_ylabel(run["metric"])
    axis.set_title(f"{run_id} ({run['task']} {run['dataset'] or ''})".strip(), fontsize=9)
    axis.legend(loc="lower right" if run["maximize"] else "upper right", fontsize=8)
    return finished_figure(figure, path)


def run_objectives(run: dict[str, Any]) -> list[Objective]:
    """A run's objectives: its metric, then those given after it (one for a single-objective run)."""
    config = run["config"] if isinstance(run["config"], dict) else json.loads(run["config"])
    return [Objective(run["metric"], bool(run["maximize"])), *map(parse_objective, config.get("objectives") or [])]


def front_flags(rows: list[dict[str, Any]], objectives: list[Objective]) -> list[bool]:
    """For each evaluation row, whether it is on the run's Pareto front (finished, feasible, not dominated)."""
    candidates = [
        i for i, row in enumerate(rows) if row["status"] == "ok" and row.get("objective_values") is not None
    ]  # fmt: skip
    points = [[o.utility(v) for o, v in zip(objectives, rows[i]["objective_values"], strict=True)] for i in candidates]
    on_front = {candidates[j] for j in pareto_indices(points)}
    return [i in on_front for i in range(len(rows))]


def plot_pareto(store: RunStore, run_id: str, path: Path) -> Path | None:
    """Every evaluation in objective space, the Pareto front drawn over them (2 objectives: one plot; more: each
    pair); infeasible results as red crosses. None for a run of one objective."""
    run = store.get_run(run_id)
    objectives = run_objectives(run)
    if len(objectives) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in store.evaluations(run_id) if row["objective_values"] is not None]
    flags = front_flags(rows, objectives)
    pairs = [(i, j) for i in range(len(objectives)) for j in range(i + 1, len(objectives))]
    figure, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4), dpi=120, squeeze=False)
    for axis, (i, j) in zip(axes[0], pairs, strict=True):
        for status, style in STATUS_STYLES.items():
            points = [(r["objective_values"][i], r["objective_values"][j]) for r in rows if r["status"] == status]
            if points:
                axis.scatter(*zip(*points, strict=True), label="evaluated" if status == "ok" else status, **style)
        on_front = [row for row, flag in zip(rows, flags, strict=True) if flag]
        front = sorted((row["objective_values"][i], row["objective_values"][j]) for row in on_front)
        if front:  # a line only where the front is a curve: with more objectives a pair shows its projection
            axis.plot(*zip(*front, strict=True), "o-" if len(objectives) == 2 else "o", color="C0", markersize=4,
                      label="Pareto front")  # fmt: skip
        axis.set_xlabel(objectives[i].spec())
        axis.set_ylabel(objectives[j].spec())
        if rows:
            axis.legend(fontsize=7)
    figure.suptitle(f"{run_id}: {sum(flags)} on the Pareto front of {len(rows)}", fontsize=9)
    return finished_figure(figure, path)


def plot_curves(store: RunStore, run_id: str, path: Path) -> Path | None:
    """Every evaluation's reports against its steps: finished ones in colour, those the scheduler stopped in
    grey, ending in a cross at the step they were stopped at. None when the run reported no steps."""
    curves = store.curves(run_id)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = store.get_run(run_id)
    statuses = {row["ncode"]: row["status"] for row in store.evaluations(run_id)}
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=120)
    for ncode, curve in curves.items():
        steps, values = zip(*curve, strict=True)
        if statuses.get(ncode) == "stopped":
            axis.plot(steps, values, color="0.6", linewidth=0.7, alpha=0.6)
            axis.scatter(steps[-1:], values[-1:], marker="x", color="0.4", s=12)
        else:
            axis.plot(steps, values, linewidth=0.9, alpha=0.8)
    stopped = sum(status == "stopped" for status in statuses.values())
    axis.set_xlabel("step (epoch)")
    axis.set_ylabel(run["metric"])
    axis.set_title(f"{run_id}: {len(curves)} learning curves, {stopped} stopped early (x)", fontsize=9)
    return finished_figure(figure, path)


def export_rows(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    """One dict per evaluation; a run of several objectives adds each objective's value under its name and
    ``pareto`` (on the front or not)."""
    evaluations = list(store.evaluations(run_id))
    objectives = run_objectives(store.get_run(run_id))
    several = len(objectives) > 1
    flags = front_flags(evaluations, objectives) if several else [False] * len(evaluations)
    rows = [
        {
            "iteration": row["iteration"],
            "position": row["position"],
            "ncode": row["ncode"],
            "score": row["score"],
            "status": row["status"],
            "fidelity": row["fidelity"],
            "cost_s": row["cost_s"],
            "error": row["error"],
            "config": row["config"],
            "metrics": row["metrics"],
        }
        for row in evaluations
    ]
    if several:
        for out, row, flag in zip(rows, evaluations, flags, strict=True):
            values = row["objective_values"] or [None] * len(objectives)
            out.update({o.name: value for o, value in zip(objectives, values, strict=True)}, pareto=flag)
    return rows


def _decoded(rows: list[dict[str, Any]], *columns: str) -> list[dict[str, Any]]:
    """Rows whose JSON text columns are parsed, so a JSON export holds values, not JSON inside strings."""
    return [{**row, **{c: json.loads(row[c]) for c in columns if isinstance(row.get(c), str)}} for row in rows]


def export_run(store: RunStore, run_id: str, fmt: str) -> str:
    """The run's evaluations as CSV or as one JSON document.

    CSV: one row per evaluation, with the run's id, task, dataset, metric and direction on every row (files
    of several runs concatenate), config and metrics as JSON cells, and ``code``: the NCode behind a ``c:``
    prefix, which CSV readers keep as text where they would read ``ncode`` 00667 as the number 667.
    """
    rows = export_rows(store, run_id)
    run = store.get_run(run_id)
    if fmt == "json":
        (run,) = _decoded([run], "final_metrics")
        decisions = _decoded(store.decisions(run_id), "pool", "chosen", "dropped", "repaired")
        document = {"run": run, "evaluations": rows, "decisions": decisions}
        curves = store.curves(run_id)
        if curves:  # what each evaluation reported as it ran: {ncode: [[step, value], ...]}
            document["reports"] = curves
        for kind in ("known", "queued"):  # results the run started from (warm_start=), codes evaluated first
            started = store.warm_starts(run_id, kind)
            if started:
                document[kind] = [{key: value for key, value in row.items() if key not in ("id", "run_id", "kind")}
                                  for row in started]  # fmt: skip
        finals = [row for fidelity in store.final_fidelities(run_id) for row in store.finals(run_id, fidelity)]
        if finals:  # the final stage: each configuration trained again, per seed and fidelity
            document["finals"] = _decoded(finals, "metrics")
        if store.llm_calls(run_id):  # CoLLM-NAS
            document.update(
                llm_calls=store.llm_calls(run_id),
                collm_rounds=_decoded(store.collm_rounds(run_id), "proposed", "chosen", "rejected", "repaired"),
                conversation=store.conversation(run_id),
            )
        return json.dumps(document, indent=2)
    labels = {
        "run_id": run_id, "task": run["task"], "dataset": run["dataset"], "metric": run["metric"],
        "direction": "maximize" if run["maximize"] else "minimize",
    }  # fmt: skip
    columns = [
        "iteration", "position", "ncode", "code", "score", "status", "fidelity", "cost_s", "error", "config", "metrics"
    ]  # fmt: skip
    objectives = run_objectives(run)
    if len(objectives) > 1:  # each objective's value, and whether the evaluation is on the Pareto front
        columns[5:5] = [*(o.name for o in objectives if o.name != "score"), "pareto"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*labels, *columns])
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                **labels, **row, "code": CODE_PREFIX + row["ncode"], "config": json.dumps(row["config"]),
                "metrics": json.dumps(row["metrics"]),
            }
        )  # fmt: skip
    return buffer.getvalue()


# comparing runs ---------------------------------------------------------------------------------


def table_optimum(config: SearchConfig) -> float | None:
    """The best score of the run's task when it is a finite results table (every code looked up: under a
    second for NAS-Bench-201 and NAS-Bench-Graph); None for tasks that train or run something."""
    if config.task not in LOOKUP_TASKS:
        return None
    from evaluators.registry import make_evaluator
    from tools.ncode import from_indices, is_valid

    evaluator = make_evaluator(config.task, config.task_options())
    space = evaluator.space
    if space.members is not None:
        codes: Any = space.members
    else:
        codes = map(from_indices, itertools.product(*(space.choices(slot) for slot in range(space.length))))
    scores = []
    for code in codes:
        if not is_valid(space, code):
            continue
        try:
            score = evaluator.evaluate(code).score
        except LookupError:  # a code the table has no row for
            continue
        if score is not None and math.isfinite(score):
            scores.append(score)
    if not scores:
        return None
    return max(scores) if evaluator.metric.maximize else min(scores)


def regret(trajectory: list[float | None], optimum: float, maximize: bool) -> list[float | None]:
    """How far the best so far is from the optimum after each evaluation (0 once it is found)."""
    return [None if best is None else (optimum - best if maximize else best - optimum) for best in trajectory]


def plot_comparison(
    curves: dict[str, list[float | None]], metric: str, maximize: bool, optima: dict[str, float], path: Path,
    title: str, source: str = "",
) -> Path:  # fmt: skip
    """Best so far versus evaluations, one line per run; beside it, when ``optima`` holds a run's optimum
    (``source`` says where it comes from), its regret on a log axis: where a run finds the optimum, its
    regret is 0 and its line stops, which the legend notes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if optima else 1
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), dpi=120, squeeze=False, sharex=True)
    direction = "higher is better" if maximize else "lower is better"
    colors = plt.get_cmap("tab10")
    for index, (label, trajectory) in enumerate(curves.items()):
        xs = range(1, len(trajectory) + 1)
        values = [math.nan if v is None else v for v in trajectory]
        axes[0][0].plot(xs, values, color=colors(index % 10), label=label, drawstyle="steps-post")
        if label in optima:
            gaps = regret(trajectory, optima[label], maximize)
            found = next((n for n, gap in enumerate(gaps, start=1) if gap == 0), None)
            shown = [math.nan if gap is None or gap <= 0 else gap for gap in gaps]
            note = f" (optimum at evaluation {found})" if found else ""
            axes[0][1].plot(xs, shown, color=colors(index % 10), label=label + note, drawstyle="steps-post")
    axes[0][0].set_title(f"best {metric} so far ({direction})", fontsize=9)
    axes[0][0].set_xlabel("evaluations")
    axes[0][0].set_ylabel(f"best {metric} so far")
    axes[0][0].legend(fontsize=7, loc="lower right" if maximize else "upper right")
    if optima:
        values = sorted({f"{value:.6g}" for value in optima.values()})
        axes[0][1].set_yscale("log")
        axes[0][1].set_title(f"regret to the optimum {', '.join(values)} {source}".strip(), fontsize=9)
        axes[0][1].set_xlabel("evaluations")
        axes[0][1].set_ylabel(f"regret: |optimum - best {metric} so far| (log)")
        axes[0][1].legend(fontsize=7, loc="upper right")
    figure.suptitle(title, fontsize=10)
    return finished_figure(figure, path)
