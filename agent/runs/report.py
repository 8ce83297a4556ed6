"""Reading finished or running searches back: summaries, history tables, plots, exports."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any

from agent.runs.store import RunStore


def best_so_far(evaluations: list[dict[str, Any]], maximize: bool) -> list[float | None]:
    """The best score after each evaluation (None until the first success)."""
    best: float | None = None
    trajectory = []
    for row in evaluations:
        score = row["score"]
        if score is not None and (best is None or (score > best if maximize else score < best)):
            best = score
        trajectory.append(best)
    return trajectory


def decision_summary(decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """How the ranker behaved: fallback rate, re-asks, latency and token use."""
    if not decisions:
        return {"decisions": 0}
    latencies = [d["latency_s"] for d in decisions if d["latency_s"] is not None]
    prompt_tokens = [d["prompt_tokens"] for d in decisions if d["prompt_tokens"] is not None]
    return {
        "decisions": len(decisions),
        "ranker": decisions[-1]["ranker"],
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
    }


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
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def export_rows(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    return [
        {
            "iteration": row["iteration"],
            "position": row["position"],
            "ncode": row["ncode"],
            "score": row["score"],
            "status": row["status"],
            "cost_s": row["cost_s"],
            "error": row["error"],
            "config": row["config"],
            "metrics": row["metrics"],
        }
        for row in store.evaluations(run_id)
    ]


def export_run(store: RunStore, run_id: str, fmt: str) -> str:
    """The run's evaluations as CSV (config and metrics as JSON cells) or as one JSON document."""
    rows = export_rows(store, run_id)
    if fmt == "json":
        run = store.get_run(run_id)
        document = {"run": run, "evaluations": rows, "decisions": store.decisions(run_id)}
        if store.llm_calls(run_id):  # CoLLM-NAS
            document.update(
                llm_calls=store.llm_calls(run_id),
                collm_rounds=store.collm_rounds(run_id),
                conversation=store.conversation(run_id),
            )
        return json.dumps(document, indent=2)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["ncode", "score"])
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "config": json.dumps(row["config"]), "metrics": json.dumps(row["metrics"])})
    return buffer.getvalue()
