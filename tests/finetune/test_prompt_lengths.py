"""Prompt lengths: token counts or UTF-8 bytes, their distribution, and the one-line warning."""

from __future__ import annotations

from pathlib import Path

from finetune.curate import TEMPLATE_ALLOWANCE, length_report, length_warning, percentile, sequence_lengths

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = [
    {"messages": [{"role": "system", "content": "01234|1.0000,"}], "answer": "01234"},
    {"messages": [{"role": "user", "content": "é"}], "answer": ""},
]


def test_lengths_without_a_tokenizer_are_utf8_bytes_of_prompt_and_answer():
    assert sequence_lengths(SAMPLES) == [13 + 5, 2]


def test_lengths_with_a_tokenizer_count_each_turn_alone_in_chunks():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ROOT / "models" / "lm-searcher-tiny")
    alone = [
        sum(
            len(tokenizer(text, add_special_tokens=False)["input_ids"])
            for text in (s["messages"][0]["content"], s["answer"])
        )
        for s in SAMPLES
    ]
    assert sequence_lengths(SAMPLES, tokenizer, chunk=1) == sequence_lengths(SAMPLES, tokenizer) == alone


def test_report_and_warning():
    assert [percentile([1, 2, 3, 4], share) for share in (0.25, 0.5, 0.95, 1.0)] == [1, 2, 4, 4]
    report = length_report([100, 900, 2000, 1990], "utf8-bytes", limit=2048)
    assert (report["median"], report["p95"], report["max"]) == (900, 2000, 2000)
    assert report["over_limit"] == 2  # 1990 and 2000 do not fit with the template's allowance
    assert report["cutoff_len"] == 2048 + 128 >= 2000 + TEMPLATE_ALLOWANCE
    warning = length_warning(report, "paper")
    assert warning.startswith("warning: 2 of 4 examples need more than 2048 tokens (utf8-bytes; longest 2000")
    assert "cutoff_len: 2176" in warning and "paper curation" in warning and "\n" not in warning
    assert length_warning(length_report([10, 20], "utf8-bytes", limit=2048), "compact") is None
