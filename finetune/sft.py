"""Supervised fine-tuning of any Hugging Face causal LM on curated ranking samples (TRL + peft).

The paper's setting by default: learning rate 1e-5, linear warm-up over 10% of the
steps, 1 epoch, 8 samples per device, gradient accumulation 2, bf16 where the device
supports it; LoRA (``lora=True``) or a full fine-tune. The loss is on the answer only:
each row is a conversational prompt-completion pair (``prompt`` = the ranker's own
prompt turns, ``completion`` = the assistant turn with the label), for which TRL's
``SFTTrainer`` masks every prompt token (``completion_only_loss``). Examples longer
than ``max_length`` tokens are dropped rather than truncated, so no label is ever cut.

Checkpoints go to ``OUT/checkpoints`` every ``save_steps`` optimizer steps;
``resume=True`` continues from the newest one. The result is ``OUT/model`` (full
fine-tune, or LoRA merged into the base with ``merge=True``) or ``OUT/adapter``
(a LoRA adapter, which vLLM serves with ``--enable-lora``), with the tokenizer and
``lmsearcher.json`` (the prompt format the data was rendered in), ready for
``transformers serve`` or vLLM.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finetune.export import HF_DIR, SUMMARY
from prompts.card import MODEL_CARD


class SftError(ValueError):
    """Bad input for fine-tuning (dataset, model, template); the message says what to fix."""


@dataclass(frozen=True)
class SftOptions:
    model: str
    dataset: str
    out: str
    lora: bool = True
    lr: float = 1e-5
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 2
    warmup_ratio: float = 0.1
    scheduler: str = "cosine"
    max_steps: int = -1
    save_steps: int = 500
    save_total_limit: int | None = 3
    logging_steps: int = 10
    max_length: int = 4096
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"
    merge: bool = False
    resume: bool = False
    seed: int = 0
    bf16: bool | None = None  # None: bf16 when the accelerator supports it
    gradient_checkpointing: bool = False
    chat_template: str | None = None  # a Jinja file, for models without a chat template


def dataset_dir(path: str | Path) -> Path:
    """The ``save_to_disk`` folder: ``path`` itself, or ``path/hf_dataset`` (a curation output folder)."""
    path = Path(path).expanduser()
    for candidate in (path, path / HF_DIR):
        if (candidate / "state.json").is_file() and (candidate / "dataset_info.json").is_file():
            return candidate
    raise SftError(
        f"no Hugging Face dataset at {path} (nor {path / HF_DIR}); create one with: "
        "python main.py finetune curate --out DIR"
    )


def curation_summary(data: Path) -> dict[str, Any]:
    """``summary.json`` written next to the dataset by the curation, if any."""
    for candidate in (data / SUMMARY, data.parent / SUMMARY):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return {}


def prompt_completion(dataset):
    """The ``prompt`` and ``completion`` columns (conversational prompt-completion pairs, which TRL trains with
    the loss on the completion only); a dataset curated before they existed (``messages`` without the answer,
    and ``answer``) is converted."""
    columns = set(dataset.column_names)
    if {"prompt", "completion"} <= columns:
        return dataset.select_columns(["prompt", "completion"])
    if {"messages", "answer"} <= columns:
        return dataset.map(
            lambda row: {"prompt": row["messages"], "completion": [{"role": "assistant", "content": row["answer"]}]},
            remove_columns=dataset.column_names,
        )
    raise SftError("the dataset lacks the columns prompt and completion; re-create it with finetune curate")


def bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check_model(model: str) -> None:
    """A local folder must hold a model; anything else must look like a Hub id (``org/name``)."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise SftError(f"{model} is not a Hugging Face model folder (no config.json)")
        return
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise SftError(f"model {model!r} not found; give a local model folder or a Hub id such as org/name")


def load_model(options: SftOptions, bf16: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model(options.model)
    # LoRA trains small fp32 adapters on a frozen bf16 base; a full fine-tune keeps fp32 master weights
    # (bf16 weights would swallow updates at lr 1e-5) and computes in bf16 under autocast.
    dtype = torch.bfloat16 if bf16 and options.lora else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(options.model)
        model = AutoModelForCausalLM.from_pretrained(options.model, dtype=dtype)
    except OSError as error:
        raise SftError(f"cannot load model {options.model!r}: {str(error).splitlines()[0]}") from None
    if options.chat_template:
        template = Path(options.chat_template).expanduser()
        if not template.is_file():
            raise SftError(f"chat template file {template} not found")
        tokenizer.chat_template = template.read_text()
    if not tokenizer.chat_template:
        raise SftError(f"model {options.model!r} has no chat template; pass one with --chat-template FILE.jinja")
    return model, tokenizer


def build_trainer(options: SftOptions):
    """The ``SFTTrainer``, with the dataset prepared (tokenized, labels masked) and over-long rows dropped.

    Returns the trainer and facts for the report (examples kept and dropped, bf16, where checkpoints go).
    """
    from datasets import load_from_disk
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    data = dataset_dir(options.dataset)
    dataset = prompt_completion(load_from_disk(str(data)))
    bf16 = bf16_supported() if options.bf16 is None else options.bf16
    model, tokenizer = load_model(options, bf16)
    out = Path(options.out).expanduser()
    config = SFTConfig(
        output_dir=str(out / "checkpoints"),
        learning_rate=options.lr,
        num_train_epochs=options.epochs,
        max_steps=options.max_steps,
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        warmup_steps=options.warmup_ratio,  # a float below 1 is a ratio of the training steps (transformers 5)
        lr_scheduler_type=options.scheduler,
        bf16=bf16,
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=options.save_total_limit,
        logging_steps=options.logging_steps,
        activation_checkpointing=options.gradient_checkpointing,  # transformers 5's name for it
        seed=options.seed,
        report_to="none",
        dataloader_pin_memory=_cuda(),
        completion_only_loss=True,
        max_length=None,  # never truncate (it could cut the answer); too-long rows are dropped below
    )
    peft_config = None
    if options.lora:
        peft_config = LoraConfig(
            r=options.lora_r,
            lora_alpha=options.lora_alpha,
            lora_dropout=options.lora_dropout,
            target_modules=options.lora_targets,
            task_type="CAUSAL_LM",
        )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )
    before = len(trainer.train_dataset)
    trainer.train_dataset = trainer.train_dataset.filter(lambda row: len(row["input_ids"]) <= options.max_length)
    kept = len(trainer.train_dataset)
    if kept == 0:
        raise SftError(f"every example is longer than --max-length {options.max_length} tokens; raise it")
    facts = {"examples": kept, "dropped_too_long": before - kept, "bf16": bf16, "dataset": str(data)}
    return trainer, facts


def train(options: SftOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune, save the servable model folder, and return a report (also saved in the model card)."""
    from transformers.trainer_utils import get_last_checkpoint

    started = time.perf_counter()
    trainer, facts = build_trainer(options)
    out = Path(options.out).expanduser()
    checkpoints = out / "checkpoints"
    resume_from = get_last_checkpoint(str(checkpoints)) if options.resume and checkpoints.is_dir() else None
    if options.resume and resume_from is None:
        log(f"no checkpoint in {checkpoints}; starting from the beginning")
    elif resume_from:
        log(f"resuming from {resume_from}")
    log(f"training on {facts['examples']} examples ({facts['dropped_too_long']} dropped as too long), "
        f"{'LoRA' if options.lora else 'full fine-tune'}, bf16 {facts['bf16']}")  # fmt: skip
    result = trainer.train(resume_from_checkpoint=resume_from)
    model = trainer.model
    if options.lora and options.merge:
        model = model.merge_and_unload()
    final = out / ("adapter" if options.lora and not options.merge else "model")
    model.save_pretrained(str(final), safe_serialization=True)
    trainer.processing_class.save_pretrained(str(final))
    summary = curation_summary(Path(facts["dataset"]))
    report = {
        "model_dir": str(final),
        "base_model": options.model,
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "resumed_from": resume_from,
        **facts,
        "seconds": time.perf_counter() - started,
    }
    card = {
        "prompt_format": summary.get("prompt_format", "compact"),
        "history_cap": summary.get("history_cap"),
        "trained_on": summary.get("domain_specs"),
        "samples": summary.get("samples"),
        "pruning": summary.get("pruning"),
        "sft": {key: value for key, value in asdict(options).items() if key not in ("dataset", "out")},
        **report,
    }
    (final / MODEL_CARD).write_text(json.dumps({k: v for k, v in card.items() if v is not None}, indent=2) + "\n")
    return report
