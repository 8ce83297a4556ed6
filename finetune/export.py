"""Writing curated ranking samples for trainers: a Hugging Face dataset, LLaMA-Factory files, a summary.

Layout of an export folder::

    OUT/hf_dataset/                  datasets.Dataset.save_to_disk (columns messages, answer, domain, history)
    OUT/llamafactory/NAME.json       sharegpt ("OpenAI") format: {"messages": [system/user/assistant turns]}
    OUT/llamafactory/dataset_info.json   the entry LLaMA-Factory needs to load NAME.json
    OUT/summary.json                 counts per domain, mean history length, prompt format, pruning, seed

The prompt turns are exactly those of ``prompts.render`` (what the ranker sends at
inference); the assistant turn is the label. LLaMA-Factory's sharegpt reader needs
a user turn after the optional system turn (it skips any example whose turns do not
alternate user/assistant), so a prompt that is a system message only (the
``compact`` format) gets an empty user turn there; the Hugging Face dataset keeps
the prompt as rendered. The LLaMA-Factory entry follows hiyouga/LLaMA-Factory's
``data/README.md`` ("OpenAI Format" under "Sharegpt Format").
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HF_DIR = "hf_dataset"
LLAMAFACTORY_DIR = "llamafactory"
SUMMARY = "summary.json"
DEFAULT_NAME = "lmsearcher_ranking"
LLAMAFACTORY_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def records(samples: Sequence[dict]) -> list[dict]:
    """The dataset rows: ``messages`` (the prompt turns), ``answer``, ``domain``, ``history`` (its length),
    ``task`` (``rank``, ``grade`` or ``generate``), ``group`` (the draw: a ``grade`` draw gives one row per
    candidate, all with the same history)."""
    return [
        {
            "messages": [{"role": m["role"], "content": m["content"]} for m in sample["messages"]],
            "answer": sample["answer"],
            "domain": sample["domain"],
            "history": int(sample["history"]),
            "task": sample["task"],
            "group": int(sample["group"]),
        }
        for sample in samples
    ]


def save_hf_dataset(samples: Sequence[dict], path: Path) -> Path:
    """A ``datasets.Dataset`` saved with ``save_to_disk``; read it back with ``datasets.load_from_disk``."""
    from datasets import Dataset

    if not samples:
        raise ValueError("no samples to export")
    Dataset.from_list(records(samples)).save_to_disk(str(path))
    return path


def llamafactory_messages(sample: dict) -> list[dict[str, str]]:
    """Prompt turns plus the answer as the assistant turn, with the user turn LLaMA-Factory requires."""
    turns = [{"role": m["role"], "content": m["content"]} for m in sample["messages"]]
    system, rest = (turns[:1], turns[1:]) if turns and turns[0]["role"] == "system" else ([], turns)
    if not rest or rest[0]["role"] != "user":
        rest = [{"role": "user", "content": ""}, *rest]
    return [*system, *rest, {"role": "assistant", "content": sample["answer"]}]


def llamafactory_entry(file_name: str) -> dict[str, Any]:
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": dict(LLAMAFACTORY_TAGS),
    }


def save_llamafactory(samples: Sequence[dict], folder: Path, name: str = DEFAULT_NAME) -> tuple[Path, Path]:
    """``NAME.json`` and ``dataset_info.json`` (an existing one gains or updates the ``NAME`` entry)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.json"
    data.write_text(json.dumps([{"messages": llamafactory_messages(s)} for s in samples], ensure_ascii=False))
    info_path = folder / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info[name] = llamafactory_entry(data.name)
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return data, info_path


def family(domain: str) -> str:
    """``nbg:cora`` -> ``nbg``, ``synthetic-123`` -> ``synthetic``, a table name stays itself."""
    if domain.startswith("synthetic-"):
        return "synthetic"
    return domain.split(":", 1)[0]


def summarize(samples: Sequence[dict], **settings: Any) -> dict[str, Any]:
    """Sizes and domain mix of a curated set, plus the settings that made it (seed, pruning, format...)."""
    per_domain = Counter(sample["domain"] for sample in samples)
    per_family = Counter(family(sample["domain"]) for sample in samples)
    histories = [int(sample["history"]) for sample in samples]
    return {
        "samples": len(samples),
        **settings,
        "domains": len(per_domain),
        "per_task": dict(sorted(Counter(sample["task"] for sample in samples).items())),
        "per_family": dict(sorted(per_family.items())),
        "mean_history": sum(histories) / len(histories) if histories else 0.0,
        "min_history": min(histories, default=0),
        "max_history": max(histories, default=0),
        "per_domain": dict(sorted(per_domain.items())),
    }


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A short human-readable version of ``summarize`` (families, not the hundreds of synthetic domains)."""
    mix = ", ".join(f"{name} {count}" for name, count in summary["per_family"].items())
    lines = [
        f"{summary['samples']} samples from {summary['domains']} domains ({mix})",
        "tasks: " + ", ".join(f"{task} {count}" for task, count in summary["per_task"].items()),
        f"history length mean {summary['mean_history']:.1f} (min {summary['min_history']}, "
        f"max {summary['max_history']})",
    ]
    skip = ("per_domain", "per_family", "per_task", "samples", "domains", "files", "domain_specs")
    settings = {k: v for k, v in summary.items() if k not in skip and not k.endswith("_history")}
    lines.append(", ".join(f"{key} {value}" for key, value in settings.items()))
    return lines


def export(samples: Sequence[dict], out: Path, name: str = DEFAULT_NAME, **settings: Any) -> dict[str, Any]:
    """Write all three outputs under ``out``; returns the summary (also saved as ``summary.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    save_hf_dataset(samples, out / HF_DIR)
    data, info = save_llamafactory(samples, out / LLAMAFACTORY_DIR, name)
    summary = summarize(samples, **settings)
    summary["files"] = {"hf_dataset": str(out / HF_DIR), "llamafactory": str(data), "dataset_info": str(info)}
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
