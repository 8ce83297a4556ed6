"""Export: the Hugging Face dataset round-trips; LLaMA-Factory files follow its sharegpt/OpenAI format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from finetune.curate import CurationOptions, curate
from finetune.export import (
    HF_DIR,
    LLAMAFACTORY_DIR,
    SUMMARY,
    export,
    llamafactory_entry,
    records,
    save_llamafactory,
)
from tests.finetune.helpers import grid_table_domain, synthetic_domains


@pytest.fixture(scope="module", params=["compact", "paper", "choice", "grade"])
def samples(request):
    domains = [grid_table_domain(), *synthetic_domains(6)]
    options = CurationOptions(min_archs=20, max_archs=30, candidates=5, prompt_format=request.param)
    return curate(domains, 12, seed=0, options=options)


def llamafactory_accepts(messages: list[dict]) -> bool:
    """LLaMA-Factory's sharegpt converter: an optional leading system turn, then user/assistant
    alternating, an even number of turns (it skips other examples as abnormal)."""
    if messages and messages[0]["role"] == "system":
        messages = messages[1:]
    expected = ("user", "assistant")
    return (
        len(messages) % 2 == 0
        and len(messages) > 0
        and all(m["role"] == expected[i % 2] for i, m in enumerate(messages))
    )


def test_hf_dataset_round_trips(samples, tmp_path: Path):
    summary = export(samples, tmp_path, seed=0, pruning=True)
    dataset = load_from_disk(str(tmp_path / HF_DIR))
    assert set(dataset.column_names) == {"messages", "answer", "domain", "history", "task", "group"}
    assert dataset.to_list() == records(samples)
    assert dataset[0]["messages"][0].keys() == {"role", "content"}
    assert summary["files"]["hf_dataset"] == str(tmp_path / HF_DIR)


def test_llamafactory_json_and_dataset_info(samples, tmp_path: Path):
    export(samples, tmp_path, name="ranking")
    folder = tmp_path / LLAMAFACTORY_DIR
    data = json.loads((folder / "ranking.json").read_text())
    info = json.loads((folder / "dataset_info.json").read_text())
    assert info == {
        "ranking": {
            "file_name": "ranking.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }
    assert len(data) == len(samples)
    for row, sample in zip(data, samples, strict=True):
        assert set(row) == {"messages"}
        messages = row["messages"]
        assert llamafactory_accepts(messages)
        assert messages[-1] == {"role": "assistant", "content": sample["answer"]}
        prompt_turns = [m for m in messages[:-1] if m["content"]]  # the inserted empty user turn aside
        assert prompt_turns == sample["messages"]


def test_dataset_info_keeps_other_entries(samples, tmp_path: Path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"alpaca_en": {"file_name": "alpaca.json"}}))
    save_llamafactory(samples, tmp_path, "ours")
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["alpaca_en"] == {"file_name": "alpaca.json"}
    assert info["ours"] == llamafactory_entry("ours.json")


def test_summary_counts_and_settings(samples, tmp_path: Path):
    summary = export(samples, tmp_path, seed=4, pruning=False, prompt_format="compact")
    saved = json.loads((tmp_path / SUMMARY).read_text())
    assert saved == summary
    assert summary["samples"] == len(samples) == sum(summary["per_domain"].values())
    assert sum(summary["per_family"].values()) == len(samples)
    assert set(summary["per_family"]) <= {"grid", "synthetic"}
    assert summary["mean_history"] == pytest.approx(sum(s["history"] for s in samples) / len(samples))
    assert (summary["seed"], summary["pruning"], summary["prompt_format"]) == (4, False, "compact")
    task = "grade" if samples[0]["task"] == "grade" else "rank"  # grade: one example per candidate
    assert summary["per_task"] == {task: len(samples)}


def test_nothing_to_export_is_an_error(tmp_path: Path):
    with pytest.raises(ValueError, match="no samples"):
        export([], tmp_path)
