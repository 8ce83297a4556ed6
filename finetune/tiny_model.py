"""LM-Searcher-tiny: a LLaMA-architecture model small enough to train from scratch on a CPU.

Head dimension 32 so that vLLM can serve it as well as ``transformers serve``.
The code characters of the ``choice`` format start with built embeddings, sums
of parts: a history character (slot, option, score digit) is the plain
character of its slot and option plus the score on one fixed direction (-1 for
0 to +1 for 9), and a candidate character (slot, option, label) is the plain
character plus the label letter's embedding. So a candidate's option matches
the history codes that share it, and an answer's label the candidate that
carries it, from the first step, and averaging matched history characters
averages their scores. Training keeps these rows fixed (``frozen_token_ids``):
the model learns to use the parts, not to find them. The label letters
themselves stay trainable: the embeddings are tied, and an answer letter must
outscore the thousand candidate characters built from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from finetune.tokenizer import build_tokenizer
from prompts.choice import GRADED_CHARACTERS, LABELLED_CHARACTERS, LABELS, TAGGED_CHARACTERS, TOP_SCORE

# Query/key weight scale: an identical token then scores about 12 before softmax.
MATCH_STD = 0.13
# Rotary base as in LLaMA 3: slow rotations leave most of each head comparing content, not position.
ROPE_THETA = 500_000.0


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
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
    )
    if config.head_dim < 32:
        raise ValueError(f"head dimension {config.head_dim} < 32: vLLM could not serve the model")
    model = LlamaForCausalLM(config)
    _build_code_embeddings(model, tokenizer)
    _mimetic_attention(model)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    )
    return model


def frozen_token_ids(tokenizer: PreTrainedTokenizerFast) -> torch.Tensor:
    """Ids whose embeddings are built, not learned: the code characters."""
    characters = TAGGED_CHARACTERS + GRADED_CHARACTERS + LABELLED_CHARACTERS
    return torch.tensor(tokenizer.convert_tokens_to_ids(list(characters)))


def _build_code_embeddings(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    def ids(characters: str) -> torch.Tensor:
        return torch.tensor(tokenizer.convert_tokens_to_ids(list(characters)))

    tagged, graded, labelled = ids(TAGGED_CHARACTERS), ids(GRADED_CHARACTERS), ids(LABELLED_CHARACTERS)
    with torch.no_grad():
        table = model.get_input_embeddings().weight
        plain = table[tagged][:, None, :]
        score_direction = torch.randn(table.shape[1]) * model.config.initializer_range
        scores = torch.linspace(-1.0, 1.0, TOP_SCORE + 1)[:, None] * score_direction
        table[graded] = (plain + scores[None]).reshape(len(graded), -1)
        table[labelled] = (plain + table[ids(LABELS)][None]).reshape(len(labelled), -1)


def _mimetic_attention(model: LlamaForCausalLM) -> None:
    """Each head's keys start equal to its queries, large enough that attention starts out favouring
    similar tokens, and each head's output starts as a copy of what it reads, so the matched tokens'
    content reaches the next layer (mimetic initialisation, Trockman & Kolter 2023)."""
    with torch.no_grad():
        for layer in model.model.layers:
            attention = layer.self_attn
            attention.q_proj.weight.normal_(0.0, MATCH_STD)
            attention.k_proj.weight.copy_(attention.q_proj.weight)
            attention.o_proj.weight.copy_(attention.v_proj.weight.T)


def new_tiny(size: TinySize = TinySize()) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    tokenizer = build_tokenizer(size.max_positions)
    return build_model(tokenizer, size), tokenizer


def save(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, path: Path) -> Path:
    """Hugging Face format (safetensors), loadable by transformers serve and vLLM."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
