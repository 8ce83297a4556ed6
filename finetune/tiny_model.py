"""LM-Searcher-tiny: a LLaMA-architecture model small enough to train from scratch on a CPU.

Head dimension 32 so that vLLM can serve it as well as ``transformers serve``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from finetune.tokenizer import build_tokenizer
from prompts.choice import MAX_OPTIONS, MAX_SLOTS, TAGGED_CHARACTERS
from prompts.grade import SCORED_CHARACTERS
from prompts.near import NEAR_CHARACTERS


@dataclass(frozen=True)
class TinySize:
    hidden: int = 256
    layers: int = 4
    heads: int = 8
    intermediate: int = 768
    max_positions: int = 4096


def build_model(tokenizer: PreTrainedTokenizerFast, size: TinySize) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        head_dim=size.hidden // size.heads,
        max_position_embeddings=size.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if config.head_dim < 32:
        raise ValueError(f"head dimension {config.head_dim} < 32: vLLM could not serve the model")
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    )
    return model


def factored_embeddings(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, scale: float = 0.06) -> None:
    """Start each code character's embedding as a slot vector plus an option vector (plus, for the
    ``grade`` format's scored characters, the vector of the score digit, shared with the digit's token);
    the ``near`` format's characters start as a distance vector plus the score digit's vector.

    Why: the 10,240 scored characters each occur rarely; with shared parts, what
    is learned about one character reaches the others from the first step. An
    initialisation only: every weight trains.
    """
    generator = torch.Generator().manual_seed(0)
    hidden = model.config.hidden_size
    slot, option, score = (scale * torch.randn(n, hidden, generator=generator) for n in (MAX_SLOTS, MAX_OPTIONS, 10))
    gap = scale * torch.randn(MAX_SLOTS + 1, hidden, generator=generator)
    pair = (slot[:, None, :] + option[None, :, :]).reshape(MAX_SLOTS * MAX_OPTIONS, hidden)
    ids = tokenizer.convert_tokens_to_ids
    with torch.no_grad():
        table = model.get_input_embeddings().weight
        table[ids(list(TAGGED_CHARACTERS))] = pair
        table[ids(list(SCORED_CHARACTERS))] = (pair[:, None, :] + score[None, :, :]).reshape(-1, hidden)
        table[ids(list(NEAR_CHARACTERS))] = (gap[:, None, :] + score[None, :, :]).reshape(-1, hidden)
        table[ids(list(string.digits))] = score


def new_tiny(size: TinySize = TinySize(), seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A fresh model and its tokenizer; the same ``seed`` gives the same weights (the caller's torch RNG untouched)."""
    tokenizer = build_tokenizer(size.max_positions)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(tokenizer, size)
    factored_embeddings(model, tokenizer)
    return model, tokenizer


def save(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, path: Path) -> Path:
    """Hugging Face format (safetensors), loadable by transformers serve and vLLM."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
