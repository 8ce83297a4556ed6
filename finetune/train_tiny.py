"""Training LM-Searcher-tiny from scratch on curated ranking samples (CPU-friendly).

A plain PyTorch loop: loss on the answer only (logits computed at the answer
positions only, not over the whole prompt), AdamW with warm-up and cosine
decay over the steps or the wall-clock budget (whichever ends training first),
length-bucketed batches, draws packed into one sequence each, and checkpoints
that a later call resumes from.
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


def answer_start(labels: Sequence[int]) -> int:
    """Index of the first learned token (the answer's first token) of ``encode_sample``'s labels."""
    return next(i for i, label in enumerate(labels) if label != IGNORE)


@dataclass
class Packed:
    """One training sequence: a shared prompt prefix (block 0), then each example's rest in its own block."""

    ids: list[int]
    labels: list[int]
    positions: list[int]
    blocks: list[int]


def pack(tokenizer: PreTrainedTokenizerFast, group: Sequence[dict], max_length: int) -> Packed:
    """Examples that share a prompt prefix (a ``grade`` draw's candidates) as one sequence.

    Each block sees the prefix and itself only, at the positions it would have
    alone (``attention_masks``): the same loss as training the examples one by
    one, with the shared history computed once.
    """
    encoded = [encode_sample(tokenizer, sample, max_length) for sample in group]
    first = encoded[0][0]
    # The prefix ends before any answer: a block starts with a prompt token, so no label is predicted across blocks.
    limit = min(answer_start(labels) for _, labels in encoded)
    shared = 0
    while shared < limit and all(ids[shared] == first[shared] for ids, _ in encoded):
        shared += 1
    ids, labels = first[:shared], [IGNORE] * shared
    positions, blocks = list(range(shared)), [0] * shared
    for block, (own_ids, own_labels) in enumerate(encoded, start=1):
        ids += own_ids[shared:]
        labels += own_labels[shared:]
        positions += range(shared, len(own_ids))
        blocks += [block] * (len(own_ids) - shared)
    return Packed(ids, labels, positions, blocks)


def groups(samples: Sequence[dict]) -> list[list[dict]]:
    """Consecutive samples with the same ``group`` (one draw), together; others alone."""
    found: list[list[dict]] = []
    for sample in samples:
        if found and "group" in sample and found[-1][0].get("group") == sample["group"]:
            found[-1].append(sample)
        else:
            found.append([sample])
    return found


def batches(encoded: list[Packed], batch_size: int, rng: random.Random):
    """Endless batches of similar length (less padding), in random order."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    while True:
        rng.shuffle(chunks)
        yield from chunks


def attention_masks(blocks: torch.Tensor) -> torch.Tensor:
    """``batch x 1 x query x key`` booleans: causal, within the prefix and a token's own block; padding (-1)
    sees only itself, so no row is empty."""
    width = blocks.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    query, key = blocks[:, :, None], blocks[:, None, :]
    allowed = causal & (key >= 0) & ((key == 0) | (key == query))
    return (allowed | torch.eye(width, dtype=torch.bool))[:, None]


def collate(items: list[Packed], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(item.ids) for item in items)
    input_ids = torch.full((len(items), width), pad_id)
    labels = torch.full((len(items), width), IGNORE)
    positions = torch.zeros((len(items), width), dtype=torch.long)
    blocks = torch.full((len(items), width), -1)
    for row, item in enumerate(items):
        size = len(item.ids)
        input_ids[row, :size] = torch.tensor(item.ids)
        labels[row, :size] = torch.tensor(item.labels)
        positions[row, :size] = torch.tensor(item.positions)
        blocks[row, :size] = torch.tensor(item.blocks)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": positions,
        "attention_mask": attention_masks(blocks),
    }


def answer_loss(model: LlamaForCausalLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions."""
    hidden = model.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    learned = targets != IGNORE
    return torch.nn.functional.cross_entropy(model.lm_head(hidden[:, :-1][learned]), targets[learned])


def progress(step: int, elapsed: float, options: TrainOptions) -> float:
    """How far training is, 0-1: by steps, or by time when the time budget ends it sooner."""
    by_time = elapsed / options.time_budget_s if options.time_budget_s else 0.0
    return min(1.0, max(step / options.steps, by_time))


def learning_rate_factor(done: float, warmup_ratio: float) -> float:
    """Linear warm-up, then cosine decay to zero, over training's progress (0-1)."""
    if done < warmup_ratio:
        return (done + 1e-3) / warmup_ratio
    return 0.5 * (1 + math.cos(math.pi * (done - warmup_ratio) / max(1e-9, 1 - warmup_ratio)))


def train(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    samples: Sequence[dict],
    options: TrainOptions,
    checkpoint: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train in place; returns steps done, final smoothed loss and seconds."""
    torch.manual_seed(options.seed)
    rng = random.Random(options.seed)
    encoded = [pack(tokenizer, group, options.max_length) for group in groups(samples)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    step, spent = 0, 0.0  # ``spent``: training seconds of earlier calls, so a resumed run keeps its schedule
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, spent, rng = state["step"], state["seconds"], state["rng"]
        log(f"resumed from {checkpoint} at step {step}")
    model.train()
    started, smoothed = time.perf_counter() - spent, None
    stream = batches(encoded, options.batch_size, rng)
    while step < options.steps:
        elapsed = time.perf_counter() - started
        if options.time_budget_s is not None and elapsed > options.time_budget_s:
            log(f"time budget of {options.time_budget_s:.0f} s reached at step {step}")
            break
        for group in optimizer.param_groups:
            group["lr"] = options.lr * learning_rate_factor(progress(step, elapsed, options), options.warmup_ratio)
        batch = collate([encoded[i] for i in next(stream)], tokenizer.pad_token_id)
        loss = answer_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        smoothed = loss.item() if smoothed is None else 0.95 * smoothed + 0.05 * loss.item()
        if step % options.log_every == 0 or step == options.steps:
            elapsed = time.perf_counter() - started
            log(f"step {step}/{options.steps} loss {smoothed:.4f} ({elapsed:.0f} s)")
            if checkpoint is not None:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng}
                partial = checkpoint.with_suffix(".partial")  # write then rename: a kill never leaves half a file
                torch.save({**state, "step": step, "seconds": elapsed}, partial)
                partial.replace(checkpoint)
    model.eval()
    return {"steps": step, "loss": smoothed, "seconds": time.perf_counter() - started}
