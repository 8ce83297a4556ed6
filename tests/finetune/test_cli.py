"""``python main.py finetune ...``: curate end to end, and one clear line with exit 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk

from finetune.build_tiny import RECIPE_SAMPLES, default_samples
from finetune.cli import main
from prompts.card import model_card

ROOT = Path(__file__).resolve().parents[2]


def test_curate_end_to_end(tmp_path: Path, capsys):
    out = tmp_path / "curated"
    argv = ["curate", "--domains", "nbg:cora", "synthetic:10", "--samples", "30", "--seed", "3", "--out", str(out)]
    assert main([*argv, "--min-archs", "30", "--max-archs", "50", "--candidates", "8", "--history-cap", "40"]) == 0
    printed = capsys.readouterr().out
    assert "30 samples" in printed and "nbg" in printed and "synthetic" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 30 and summary["seed"] == 3 and summary["pruning"] is True
    assert summary["per_family"]["nbg"] + summary["per_family"]["synthetic"] == 30
    assert summary["candidates"] == 8 and summary["history_cap"] == 40
    assert len(load_from_disk(str(out / "hf_dataset"))) == 30
    rows = json.loads((out / "llamafactory" / "lmsearcher_ranking.json").read_text())
    assert len(rows) == 30
    assert "lmsearcher_ranking" in json.loads((out / "llamafactory" / "dataset_info.json").read_text())

    again = tmp_path / "again"
    assert main([*argv[:-1], str(again), "--min-archs", "30", "--max-archs", "50", "--candidates", "8",
                 "--history-cap", "40"]) == 0  # fmt: skip
    same = load_from_disk(str(again / "hf_dataset")).to_list() == load_from_disk(str(out / "hf_dataset")).to_list()
    assert same  # deterministic by seed


def test_no_prune_and_paper_format(tmp_path: Path):
    out = tmp_path / "ablation"
    argv = ["curate", "--domains", "synthetic:5", "--samples", "5", "--out", str(out), "--no-prune"]
    assert main([*argv, "--prompt-format", "paper", "--min-archs", "20", "--max-archs", "30"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pruning"] is False and summary["prompt_format"] == "paper"
    assert load_from_disk(str(out / "hf_dataset"))[0]["prompt"][0]["role"] == "user"


def test_search_share_reaches_the_curation(tmp_path: Path):
    common = ["curate", "--domains", "synthetic:4", "--samples", "6", "--min-archs", "20", "--max-archs", "30"]
    for share in ("0", "1"):
        assert main([*common, "--out", str(tmp_path / share), "--search-share", share]) == 0
        assert json.loads((tmp_path / share / "summary.json").read_text())["search_share"] == float(share)
    iid, searched = (load_from_disk(str(tmp_path / share / "hf_dataset"))["prompt"] for share in ("0", "1"))
    assert iid != searched  # search-shaped draws: other histories and pools from the same seed


def test_prompt_lengths_are_reported_and_overlong_prompts_warned_about(tmp_path: Path, capsys):
    argv = ["curate", "--domains", "synthetic:4", "--samples", "6", "--min-archs", "20", "--max-archs", "30"]
    assert main([*argv, "--out", str(tmp_path / "bytes")]) == 0
    printed = capsys.readouterr()
    lengths = json.loads((tmp_path / "bytes" / "summary.json").read_text())["prompt_tokens"]
    assert lengths["counted_by"] == "utf8-bytes" and lengths["examples"] == 6 and lengths["over_limit"] == 0
    assert lengths["median"] <= lengths["p95"] <= lengths["max"] < lengths["cutoff_len"]
    assert f"LLaMA-Factory needs cutoff_len >= {lengths['cutoff_len']}" in printed.out and "warning" not in printed.err

    tiny = str(ROOT / "models" / "lm-searcher-tiny")
    assert main([*argv, "--out", str(tmp_path / "tokens"), "--tokenizer", tiny, "--max-prompt-tokens", "100"]) == 0
    [warning] = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("curated ")]
    counted = json.loads((tmp_path / "tokens" / "summary.json").read_text())["prompt_tokens"]
    assert counted["counted_by"] == tiny and counted["over_limit"] == 6
    assert warning.startswith("warning: 6 of 6 examples need more than 100 tokens")
    assert f"cutoff_len: {counted['cutoff_len']}" in warning and "compact curation" in warning


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["curate", "--domains", "nb201", "--out", "X"], "NAS-Bench-201"),
        (["curate", "--domains", "synthetic:3", "NAS-Bench-201", "--out", "X"], "NAS-Bench-201"),
        (["curate", "--domains", "nowhere", "--out", "X"], "unknown domain"),
        (["curate", "--domains", "macro", "--data", "EMPTY", "--out", "X"], "not found"),
        (["curate", "--domains", "synthetic:3", "--min-archs", "50", "--max-archs", "10", "--out", "X"], "min-archs"),
        (["curate", "--domains", "synthetic:3", "--search-share", "1.5", "--out", "X"], "--search-share"),
        (["curate", "--domains", "synthetic:3", "--tokenizer", "EMPTY", "--out", "X"], "cannot load tokenizer"),
        (["train", "--dataset", "X", "--model", "M", "--out", "X"], "no Hugging Face dataset"),
        (["tiny", "--domains", "nb201"], "NAS-Bench-201"),
        (["tiny", "--slot-weighting", "2"], "--search-share must lie in [0, 1]"),
        (["tiny", "--search-share", "1.5"], "--search-share must lie in [0, 1]"),
        (["nonsense"], "unknown finetune command"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path: Path, capsys):
    (tmp_path / "EMPTY").mkdir()
    argv = [str(tmp_path / a) if a in ("X", "EMPTY") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len([line for line in err.splitlines() if line.startswith("error")]) == 1


def test_train_refuses_a_missing_model_path(tmp_path: Path, capsys):
    data = tmp_path / "data"
    assert main(["curate", "--domains", "synthetic:2", "--samples", "2", "--min-archs", "20", "--max-archs", "25",
                 "--out", str(data)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["train", "--dataset", str(data), "--model", str(tmp_path / "no-model"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


def test_main_py_dispatches_finetune(tmp_path: Path):
    refused = subprocess.run(
        [sys.executable, "main.py", "finetune", "curate", "--domains", "nb201", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    assert "NAS-Bench-201" in refused.stderr and not list(tmp_path.iterdir())


def test_tiny_warms_up_builds_a_near_model_and_continues_from_it(tmp_path: Path):
    small = ["--domains", "synthetic:4", "--samples", "60", "--hidden", "32", "--heads", "1", "--layers", "1",
             "--intermediate", "64", "--max-positions", "1024", "--batch-size", "4", "--minutes", "5",
             "--warmup-domains", "synthetic:4:1-2", "--warmup-samples", "40"]  # fmt: skip
    first = tmp_path / "first"
    assert main(["tiny", "--out", str(first), "--steps", "3", "--warmup-minutes", "5", *small]) == 0
    card = json.loads((first / "lmsearcher.json").read_text())
    assert card["prompt_format"] == "near" and card["history_cap"] == 24 and card["pruning"] is True
    assert card["slot_weighting"] == 0.0
    assert card["steps"] == 3 and card["init"] is None and card["size"]["hidden"] == 32
    assert card["warmup"]["steps"] == 3 and card["warmup"]["domains"] == ["synthetic:4:1-2"]
    assert (first / "model.safetensors").stat().st_size < 30 * 2**20

    second = tmp_path / "second"
    argv = ["tiny", "--out", str(second), "--steps", "2", "--init", str(first), "--no-prune", "--slot-weighting", "0.5"]
    assert main([*argv, *small]) == 0
    card = json.loads((second / "lmsearcher.json").read_text())
    assert card["slot_weighting"] == 0.5 and model_card(second)["slot_weighting"] == 0.5  # what a ranker reads
    assert card["init"] == str(first) and card["pruning"] is False and card["steps"] == 2
    assert card["warmup"] is None  # a continued model is not warmed up again
    assert card["previous"]["warmup"]["steps"] == 3 and card["previous"]["previous"] is None


def test_tiny_writes_under_runs_sizes_data_by_minutes_and_warns_when_undertrained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.chdir(tmp_path)
    small = ["--domains", "synthetic:4", "--hidden", "32", "--heads", "1", "--layers", "1", "--intermediate", "64",
             "--max-positions", "1024", "--batch-size", "4"]  # fmt: skip
    assert main(["tiny", *small, "--minutes", "0.01", "--steps", "1000"]) == 0  # no --out, no --samples
    printed = capsys.readouterr()
    [out] = (tmp_path / "runs").iterdir()
    assert out.name.startswith("lm-searcher-tiny-") and (out / "config.json").is_file()
    card = json.loads((out / "lmsearcher.json").read_text())
    assert card["samples"] == default_samples(0.01, 1000, 4, 10, RECIPE_SAMPLES) < 1000  # 0.6 s of training's worth
    assert f"curated {card['samples']} / {card['samples']} samples" in printed.err
    assert card["stopped_by"] == "time" and card["undertrained"]["draws"] == 4 * card["steps"]
    assert "warning: undertrained" in printed.err and "pick poorly" in printed.err

    before = (out / "model.safetensors").read_bytes()
    assert main(["tiny", *small, "--out", str(out), "--samples", "8", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a model" in err and "--overwrite" in err
    assert (out / "model.safetensors").read_bytes() == before

    assert main(["tiny", *small, "--out", str(out), "--samples", "8", "--steps", "1", "--overwrite"]) == 0
    card = json.loads((out / "lmsearcher.json").read_text())
    assert card["samples"] == 8 and card["steps"] == 1 and card["stopped_by"] == "steps"  # --samples wins
    assert "stopped by --steps" in capsys.readouterr().err
