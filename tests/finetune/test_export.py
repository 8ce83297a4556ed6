"""Export: one message list for the ranker's request, the Hugging Face dataset and LLaMA-Factory's file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from datasets import load_from_disk

import finetune.curate as curate_module
from agent.llm.ranker import Completion, LLMOptions, LLMRanker
from agent.runs.store import Observation
from agent.strategies.rankers import RankRequest
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
from finetune.sft import prompt_completion
from tests.finetune.helpers import grid_table_domain, synthetic_domains
from tools.ncode import sample as sample_code


@pytest.fixture(scope="module", params=["compact", "paper", "choice", "grade", "near"])
def samples(request):
    domains = [grid_table_domain(), *synthetic_domains(6)]
    options = CurationOptions(min_archs=20, max_archs=30, candidates=5, prompt_format=request.param)
    return curate(domains, 12, seed=0, options=options)


def llamafactory_reads(row: dict, entry: dict) -> tuple[str, list[dict]] | None:
    """(system, turns) as LLaMA-Factory 0.9.5's ``SharegptDatasetConverter`` reads a row with the entry's
    tags, or None where it skips the row as abnormal. A port of its checks: a leading turn with the system
    tag is the system prompt; then turns must alternate user/assistant tags, an even number of them."""
    tags = entry["tags"]
    role, content = tags["role_tag"], tags["content_tag"]
    messages = row[entry["columns"]["messages"]]
    system = ""
    if tags.get("system_tag") and messages and messages[0][role] == tags["system_tag"]:
        system, messages = messages[0][content], messages[1:]
    accepted = (
        (tags.get("user_tag"), tags.get("observation_tag")),
        (tags.get("assistant_tag"), tags.get("function_tag")),
    )
    if any(m[role] not in accepted[i % 2] for i, m in enumerate(messages)) or len(messages) % 2:
        return None
    names = {tags.get("user_tag"): "user", tags.get("assistant_tag"): "assistant"}
    return system, [{"role": names[m[role]], "content": m[content]} for m in messages]


def test_hf_dataset_round_trips(samples, tmp_path: Path):
    summary = export(samples, tmp_path, seed=0, pruning=True)
    dataset = load_from_disk(str(tmp_path / HF_DIR))
    assert set(dataset.column_names) == {"prompt", "completion", "answer", "domain", "history", "task", "group"}
    assert dataset.to_list() == records(samples)
    for row, sample in zip(dataset, samples, strict=True):
        assert row["prompt"] == sample["messages"]
        assert row["completion"] == [{"role": "assistant", "content": sample["answer"]}] and row["answer"]
    assert summary["files"]["hf_dataset"] == str(tmp_path / HF_DIR)


def test_llamafactory_file_holds_the_prompt_turns_unchanged(samples, tmp_path: Path):
    export(samples, tmp_path, name="ranking")
    folder = tmp_path / LLAMAFACTORY_DIR
    data = json.loads((folder / "ranking.json").read_text())
    info = json.loads((folder / "dataset_info.json").read_text())
    system_prompt = samples[0]["messages"][0]["role"] == "system"
    assert info == {"ranking": llamafactory_entry("ranking.json", system_prompt)}
    assert info["ranking"]["tags"]["user_tag"] == ("system" if system_prompt else "user")
    assert len(data) == len(samples)
    for row, sample in zip(data, samples, strict=True):
        assert row == {"messages": [*sample["messages"], {"role": "assistant", "content": sample["answer"]}]}
        read = llamafactory_reads(row, info["ranking"])
        assert read is not None  # not skipped
        system, turns = read
        assert system == ""  # the prompt is never LLaMA-Factory's (template-dependent) system prompt
        assert [t["content"] for t in turns] == [*(m["content"] for m in sample["messages"]), sample["answer"]]
        assert all(t["content"] for t in turns)  # no empty turn


def test_dataset_info_keeps_other_entries(samples, tmp_path: Path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"alpaca_en": {"file_name": "alpaca.json"}}))
    files, _ = save_llamafactory(samples, tmp_path, "ours")
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["alpaca_en"] == {"file_name": "alpaca.json"}
    assert set(info) == {"alpaca_en", "ours"} and files == {"ours": tmp_path / "ours.json"}


def test_paper_generation_rows_get_their_own_entry(tmp_path: Path):
    options = CurationOptions(min_archs=20, max_archs=30, candidates=5, prompt_format="paper", generation_share=0.5)
    mixed = curate(synthetic_domains(6), 20, seed=1, options=options)
    assert {s["task"] for s in mixed} == {"rank", "generate"}
    files, info_path = save_llamafactory(mixed, tmp_path, "ours")
    info = json.loads(info_path.read_text())
    assert set(files) == set(info) == {"ours", "ours_generate"}
    for entry, path in files.items():
        rows = json.loads(path.read_text())
        assert all(llamafactory_reads(row, info[entry]) is not None for row in rows)
    assert len(json.loads(files["ours"].read_text())) == sum(s["task"] == "rank" for s in mixed)

    compact = curate(synthetic_domains(6), 4, seed=1, options=CurationOptions(min_archs=20, max_archs=30))
    save_llamafactory(compact, tmp_path, "ours")  # the same folder, now one shape: the stale entry goes
    assert set(json.loads(info_path.read_text())) == {"ours"} and not (tmp_path / "ours_generate.json").exists()


class Recorder:
    """A chat client that records what the ranker sends and answers ``answer``."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.sent: list[list[dict[str, str]]] = []

    def complete(self, messages: list[dict[str, str]], grade: bool = False) -> Completion:
        self.sent.append(messages)
        return Completion(
            text=self.answer, prompt_tokens=None, completion_tokens=None, latency_s=0.0, transient_errors=0
        )


@pytest.mark.parametrize("fmt", ["compact", "paper", "near"])
def test_inference_request_training_rows_and_llamafactory_rows_are_one_message_list(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    domain = synthetic_domains(1, seed=5)[0]
    rng = random.Random(0)
    codes = list(dict.fromkeys(sample_code(domain.space, rng) for _ in range(40)))
    scored = [(code, domain.score(code)) for code in codes]
    history, pool = scored[:-4], scored[-4:]
    monkeypatch.setattr(curate_module, "sampled_draw", lambda *_: (history, pool))  # this draw, every time
    cap = 16  # below the history's size: the cap applies alike
    options = CurationOptions(candidates=len(pool), prompt_format=fmt, history_cap=cap)
    samples = curate([domain], len(pool) if fmt == "near" else 1, seed=0, options=options)

    client = Recorder("5" if fmt == "near" else pool[0][0])
    ranker = LLMRanker("llm", client, LLMOptions(prompt_format=fmt, history_cap=cap, parallel_requests=1))
    observed = [Observation(i, code, score, "ok") for i, (code, score) in enumerate(history)]
    pool_codes = [code for code, _ in pool]
    ranker.rank(RankRequest(domain.space, domain.metric, observed, pool_codes, k=1, rng=random.Random(0)))
    assert len(client.sent) == len(samples)

    export(samples, tmp_path, name="ranking")
    hf_rows = load_from_disk(str(tmp_path / HF_DIR))
    trained = prompt_completion(hf_rows)  # what finetune train hands to TRL's SFTTrainer
    lf_rows = json.loads((tmp_path / LLAMAFACTORY_DIR / "ranking.json").read_text())
    for sent, sample, hf_row, train_row, lf_row in zip(client.sent, samples, hf_rows, trained, lf_rows, strict=True):
        answer = [{"role": "assistant", "content": sample["answer"]}]
        assert hf_row["prompt"] == train_row["prompt"] == sent
        assert hf_row["completion"] == train_row["completion"] == answer
        assert lf_row["messages"] == sent + answer


def test_summary_counts_and_settings(samples, tmp_path: Path):
    summary = export(samples, tmp_path, seed=4, pruning=False, prompt_format="compact")
    saved = json.loads((tmp_path / SUMMARY).read_text())
    assert saved == summary
    assert summary["samples"] == len(samples) == sum(summary["per_domain"].values())
    assert sum(summary["per_family"].values()) == len(samples)
    assert set(summary["per_family"]) <= {"grid", "synthetic"}
    assert summary["mean_history"] == pytest.approx(sum(s["history"] for s in samples) / len(samples))
    assert (summary["seed"], summary["pruning"], summary["prompt_format"]) == (4, False, "compact")
    task = "grade" if samples[0]["task"] == "grade" else "rank"  # grade, near: one example per candidate
    assert summary["per_task"] == {task: len(samples)}


def test_nothing_to_export_is_an_error(tmp_path: Path):
    with pytest.raises(ValueError, match="no samples"):
        export([], tmp_path)
