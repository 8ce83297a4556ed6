"""SFT with TRL on a tiny LLaMA built here: answer-only loss, LoRA steps, checkpoints, resume, merge, full."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.curate import CurationOptions, curate
from finetune.export import export
from finetune.sft import (
    MODEL_CARD,
    SftError,
    SftOptions,
    build_trainer,
    check_model,
    dataset_dir,
    prompt_completion,
    train,
)
from finetune.tiny_model import TinySize, new_tiny, save
from tests.finetune.helpers import synthetic_domains

IGNORE = -100


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    model, tokenizer = new_tiny(TinySize(hidden=64, layers=2, heads=2, intermediate=128, max_positions=1024))
    return save(model, tokenizer, tmp_path_factory.mktemp("sft") / "base")


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> tuple[Path, list[dict]]:
    samples = curate(synthetic_domains(8), 8, seed=0, options=CurationOptions(min_archs=15, max_archs=25, candidates=4))
    out = tmp_path_factory.mktemp("sft") / "data"
    export(samples, out, seed=0, pruning=True, prompt_format="compact", history_cap=200)
    return out, samples


def options(tiny_model: Path, curated, out: Path, **changes) -> SftOptions:
    settings = dict(batch_size=2, grad_accum=1, max_steps=2, save_steps=2, lr=1e-3, logging_steps=1)
    return SftOptions(model=str(tiny_model), dataset=str(curated[0]), out=str(out), **{**settings, **changes})


def test_loss_is_on_the_answer_only(tiny_model, curated, tmp_path):
    trainer, facts = build_trainer(options(tiny_model, curated, tmp_path))
    tokenizer = trainer.processing_class
    assert facts["examples"] == len(curated[1]) and facts["dropped_too_long"] == 0
    for row, sample in zip(trainer.train_dataset, curated[1], strict=True):
        labels = row["labels"]
        first = next(i for i, label in enumerate(labels) if label != IGNORE)
        assert all(label != IGNORE for label in labels[first:])  # the learned part is one suffix
        assert labels[first:] == row["input_ids"][first:]
        assert tokenizer.decode(labels[first:]) == sample["answer"] + tokenizer.eos_token
        assert tokenizer.decode(row["input_ids"][:first]).endswith("<|assistant|>")  # the prompt is masked
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    for row, sample in zip(batch["labels"].tolist(), curated[1][:4], strict=True):
        assert tokenizer.decode([label for label in row if label != IGNORE]) == sample["answer"] + tokenizer.eos_token


def test_lora_steps_write_checkpoints_and_resume(tiny_model, curated, tmp_path):
    first = train(options(tiny_model, curated, tmp_path), log=lambda _: None)
    assert first["steps"] == 2 and first["resumed_from"] is None
    assert (tmp_path / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    adapter = Path(first["model_dir"])
    assert adapter == tmp_path / "adapter" and (adapter / "adapter_config.json").is_file()
    card = json.loads((adapter / MODEL_CARD).read_text())
    assert card["prompt_format"] == "compact" and card["history_cap"] == 200 and card["sft"]["lora"] is True

    lines: list[str] = []
    again = train(options(tiny_model, curated, tmp_path, max_steps=4, resume=True), log=lines.append)
    assert again["resumed_from"].endswith("checkpoint-2") and any("resuming" in line for line in lines)
    assert again["steps"] == 4
    assert (tmp_path / "checkpoints" / "checkpoint-4").is_dir()


def test_merged_lora_and_full_fine_tune_give_loadable_models(tiny_model, curated, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name, changes in (("merged", {"merge": True}), ("full", {"lora": False})):
        report = train(options(tiny_model, curated, tmp_path / name, max_steps=1, **changes), log=lambda _: None)
        folder = Path(report["model_dir"])
        assert folder == tmp_path / name / "model" and not (folder / "adapter_config.json").exists()
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        prompt = tokenizer.apply_chat_template(curated[1][0]["messages"], add_generation_prompt=True, tokenize=False)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3


def test_bad_inputs_are_clear_errors(tiny_model, tmp_path):
    with pytest.raises(SftError, match="no Hugging Face dataset"):
        dataset_dir(tmp_path)
    with pytest.raises(SftError, match="not found"):
        check_model(str(tmp_path / "missing-model"))
    with pytest.raises(SftError, match="not a Hugging Face model folder"):
        check_model(str(tmp_path))
    check_model(str(tiny_model))
    check_model("meta-llama/Llama-3.1-8B")  # a Hub id is accepted here; loading it is the Hub's business


def test_plain_trl_on_the_saved_dataset_learns_the_answers_only(tiny_model, curated, tmp_path):
    """A user's own ``SFTTrainer`` on ``load_from_disk(OUT/hf_dataset)``, no preparation: the ``prompt`` and
    ``completion`` columns make it a prompt-completion dataset, trained on the answer alone."""
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(output_dir=str(tmp_path), report_to="none", bf16=False, per_device_train_batch_size=2)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        args=config,
        train_dataset=load_from_disk(str(curated[0] / "hf_dataset")),
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
    )
    tokenizer = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for row, sample in zip(batch["labels"].tolist(), curated[1][:2], strict=True):
        assert tokenizer.decode([label for label in row if label != IGNORE]) == sample["answer"] + tokenizer.eos_token


def test_the_trained_columns_and_older_curations():
    from datasets import Dataset

    prompt, completion = [{"role": "system", "content": "p"}], [{"role": "assistant", "content": "a"}]
    new = Dataset.from_list([{"prompt": prompt, "completion": completion, "answer": "a", "domain": "d"}])
    old = Dataset.from_list([{"messages": prompt, "answer": "a", "domain": "d"}])  # before prompt/completion
    for dataset in (new, old):
        assert prompt_completion(dataset).to_list() == [{"prompt": prompt, "completion": completion}]
    with pytest.raises(SftError, match="prompt and completion"):
        prompt_completion(Dataset.from_list([{"messages": prompt}]))
