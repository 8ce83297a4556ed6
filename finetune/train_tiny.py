"""Training LM-Searcher-tiny from scratch on curated ranking samples (CPU-friendly).

A plain PyTorch loop: loss on the answer only (logits computed at the answer
positions only, which matters with a vocabulary of ten thousand code
characters), AdamW with warm-up and cosine decay, length-bucketed batches, a
wall-clock budget, optional frozen embedding rows, and checkpoints that a later
call resumes from.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

IGNORE = -100


@dataclass(frozen=True)
class TrainOptions:
    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-3
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    max_length: int = 4096
    time_budget_s: float | None = None
    seed: int = 0
    log_every: int = 50


def encode_sample(tokenizer: PreTrainedTokenizerFast, sample: dict, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels: the prompt is masked, the answer plus end-of-sequence is learned."""
    prompt = tokenizer.apply_chat_template(sample["messages"], add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(sample["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt_ids = prompt_ids[-(max_length - len(answer_ids)) :]  # keep the end: candidates come last
    return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids


def batches(encoded: list[tuple[list[int], list[int]]], batch_size: int, rng: random.Random):
    """Endless batches of similar length (less padding), in random order."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    while True:
        rng.shuffle(groups)
        yield from groups


def collate(items: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id)
    labels = torch.full((len(items), width), IGNORE)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    for row, (ids, target) in enumerate(items):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(target)] = torch.tensor(target)
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


def answer_loss(model: LlamaForCausalLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions."""
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    learned = targets != IGNORE
    return torch.nn.functional.cross_entropy(model.lm_head(hidden[:, :-1][learned]), targets[learned])


def train(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    samples: Sequence[dict],
    options: TrainOptions,
    checkpoint: Path | None = None,
    log: Callable[[str], None] = print,
    frozen_rows: torch.Tensor | None = None,
) -> dict:
    """Train in place; returns steps done, final smoothed loss and seconds.

    ``frozen_rows``: token ids whose embeddings get no gradient (they keep their values,
    up to weight decay)."""
    torch.manual_seed(options.seed)
    rng = random.Random(options.seed)
    encoded = [encode_sample(tokenizer, sample, options.max_length) for sample in samples]
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    warmup = max(1, int(options.warmup_ratio * options.steps))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, options.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    step = 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, rng = state["step"], state["rng"]
        log(f"resumed from {checkpoint} at step {step}")
    if frozen_rows is not None:
        model.get_input_embeddings().weight.register_hook(lambda grad: grad.index_fill(0, frozen_rows, 0.0))
    model.train()
    started, smoothed = time.perf_counter(), None
    stream = batches(encoded, options.batch_size, rng)
    while step < options.steps:
        if options.time_budget_s is not None and time.perf_counter() - started > options.time_budget_s:
            log(f"time budget of {options.time_budget_s:.0f} s reached at step {step}")
            break
        batch = collate([encoded[i] for i in next(stream)], tokenizer.pad_token_id)
        loss = answer_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        smoothed = loss.item() if smoothed is None else 0.95 * smoothed + 0.05 * loss.item()
        if step % options.log_every == 0 or step == options.steps:
            log(f"step {step}/{options.steps} loss {smoothed:.4f} ({time.perf_counter() - started:.0f} s)")
            if checkpoint is not None:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
                partial = checkpoint.with_suffix(".partial")  # write then rename: a kill never leaves half a file
                torch.save({**state, "scheduler": scheduler.state_dict(), "step": step, "rng": rng}, partial)
                partial.replace(checkpoint)
    model.eval()
    return {"steps": step, "loss": smoothed, "seconds": time.perf_counter() - started}
