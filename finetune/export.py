"""Writing curated ranking samples for trainers: a Hugging Face dataset, LLaMA-Factory files, a summary.

Layout of an export folder::

    OUT/hf_dataset/                  datasets.Dataset.save_to_disk (columns prompt, completion, answer,
                                     domain, history, task, group)
    OUT/llamafactory/NAME.json       sharegpt ("OpenAI") format: {"messages": prompt turns + assistant turn}
    OUT/llamafactory/dataset_info.json   the entry LLaMA-Factory needs to load NAME.json
    OUT/summary.json                 counts per domain, mean history length, prompt lengths, settings

One message list everywhere: the prompt turns are exactly those of ``prompts.render``, which the
ranker sends at inference, and the label is the assistant turn after them. The Hugging Face dataset
holds them as TRL's conversational prompt-completion pair (``prompt``, ``completion``), which TRL's
``SFTTrainer`` trains with the loss on the completion only, as ``finetune train`` does; ``answer``
repeats the label as plain text.

LLaMA-Factory's sharegpt reader wants a user turn after an optional system turn and skips any other
example. Every format but ``paper`` asks with a lone system message, so the entry for such rows names
the role ``system`` as LLaMA-Factory's user tag (and gives it no system tag): the file keeps the
ranker's messages unchanged, where an inserted empty user turn would train a sequence that inference
never sends. A ``paper`` curation with generation samples (whose prompts are system messages) puts
those rows in a second entry, ``NAME_generate``. The entries follow hiyouga/LLaMA-Factory's
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
GENERATE_SUFFIX = "_generate"


def prompt_turns(sample: dict) -> list[dict[str, str]]:
    """The prompt as the ranker sends it: ``role`` and ``content`` of each rendered message."""
    return [{"role": m["role"], "content": m["content"]} for m in sample["messages"]]


def answer_turn(sample: dict) -> list[dict[str, str]]:
    """The label as the assistant turn that follows the prompt."""
    return [{"role": "assistant", "content": sample["answer"]}]


def records(samples: Sequence[dict]) -> list[dict]:
    """The dataset rows: ``prompt`` (the prompt turns), ``completion`` (the assistant turn), ``answer`` (its
    text), ``domain``, ``history`` (its length), ``task`` (``rank``, ``grade`` or ``generate``), ``group`` (the
    draw: a ``grade`` draw gives one row per candidate, all with the same history)."""
    return [
        {
            "prompt": prompt_turns(sample),
            "completion": answer_turn(sample),
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


def lone_system(sample: dict) -> bool:
    """Whether the prompt is one system message (every format but ``paper``, and generation prompts)."""
    return [m["role"] for m in sample["messages"]] == ["system"]


def llamafactory_entry(file_name: str, system_prompt: bool = False) -> dict[str, Any]:
    """The dataset_info.json entry; ``system_prompt``: rows whose prompt is a lone system message, whose
    role LLaMA-Factory is told to read as its user turn (it has no other place for a prompt)."""
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    if system_prompt:
        tags["user_tag"] = "system"  # and no system_tag: LLaMA-Factory would take the prompt as a system prompt
    else:
        tags["system_tag"] = "system"
    return {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": tags}


def llamafactory_groups(samples: Sequence[dict], name: str = DEFAULT_NAME) -> dict[str, list[dict]]:
    """Rows per LLaMA-Factory entry: ``name`` for the rows shaped like the ranking prompts, ``name_generate``
    for generation rows of the other shape (one tag mapping reads one shape)."""
    main = next((lone_system(s) for s in samples if s["task"] != "generate"), lone_system(samples[0]))
    groups = {name: [s for s in samples if lone_system(s) == main]}
    if others := [s for s in samples if lone_system(s) != main]:
        groups[name + GENERATE_SUFFIX] = others
    return groups


def save_llamafactory(samples: Sequence[dict], folder: Path, name: str = DEFAULT_NAME) -> tuple[dict[str, Path], Path]:
    """``NAME.json`` (and ``NAME_generate.json`` if needed) with their dataset_info.json entries; an existing
    dataset_info.json keeps its other entries, and loses a ``NAME_generate`` this export no longer has."""
    folder.mkdir(parents=True, exist_ok=True)
    info_path = folder / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if info.pop(name + GENERATE_SUFFIX, None) is not None:  # written again below if this export has such rows
        (folder / f"{name}{GENERATE_SUFFIX}.json").unlink(missing_ok=True)
    files = {}
    for entry, rows in llamafactory_groups(samples, name).items():
        data = files[entry] = folder / f"{entry}.json"
        conversations = [{"messages": prompt_turns(s) + answer_turn(s)} for s in rows]
        data.write_text(json.dumps(conversations, ensure_ascii=False))
        info[entry] = llamafactory_entry(data.name, lone_system(rows[0]))
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return files, info_path


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
    if lengths := summary.get("prompt_tokens"):
        lines.append(
            f"prompt + answer tokens ({lengths['counted_by']}): median {lengths['median']}, p95 {lengths['p95']}, "
            f"max {lengths['max']}; LLaMA-Factory needs cutoff_len >= {lengths['cutoff_len']}"
        )
    skip = ("per_domain", "per_family", "per_task", "samples", "domains", "files", "domain_specs", "prompt_tokens")
    settings = {k: v for k, v in summary.items() if k not in skip and not k.endswith("_history")}
    lines.append(", ".join(f"{key} {value}" for key, value in settings.items()))
    return lines


def export(samples: Sequence[dict], out: Path, name: str = DEFAULT_NAME, **settings: Any) -> dict[str, Any]:
    """Write all three outputs under ``out``; returns the summary (also saved as ``summary.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    save_hf_dataset(samples, out / HF_DIR)
    datasets, info = save_llamafactory(samples, out / LLAMAFACTORY_DIR, name)
    summary = summarize(samples, **settings)
    summary["files"] = {
        "hf_dataset": str(out / HF_DIR),
        "llamafactory": {entry: str(path) for entry, path in datasets.items()},
        "dataset_info": str(info),
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
