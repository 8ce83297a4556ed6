"""LM-Searcher-tiny's built start: code embeddings as sums of parts, kept fixed; attention that matches."""

from __future__ import annotations

import torch

from finetune.tiny_model import TinySize, frozen_token_ids, new_tiny
from finetune.train_tiny import TrainOptions, train
from prompts.choice import graded, labelled, tag
from tests.finetune.test_train_tiny import tiny_samples

SIZE = TinySize(hidden=64, layers=2, heads=2, intermediate=128, max_positions=1024)


def embedding(model, tokenizer, character: str) -> torch.Tensor:
    return model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(character)]


def test_history_and_candidate_characters_are_their_plain_character_plus_score_or_label():
    model, tokenizer = new_tiny(SIZE)
    plain = embedding(model, tokenizer, tag("30")[1])
    scores = [embedding(model, tokenizer, graded("30", g)[1]) - plain for g in range(10)]
    assert torch.allclose(scores[9], -scores[0], atol=1e-6), "scores lie on one direction, 0 and 9 opposite"
    assert torch.allclose(scores[3], scores[0] * (1 - 2 * 3 / 9), atol=1e-6)
    assert torch.allclose(embedding(model, tokenizer, graded("41", 3)[1]) - embedding(model, tokenizer, tag("41")[1]),
                          scores[3], atol=1e-6), "the same score part in every slot"  # fmt: skip
    label = embedding(model, tokenizer, labelled("30", "C")[1]) - plain
    assert torch.allclose(label, embedding(model, tokenizer, "C"), atol=1e-6)


def test_keys_start_equal_to_queries_and_outputs_copy_values():
    model, _ = new_tiny(SIZE)
    for layer in model.model.layers:
        attention = layer.self_attn
        assert torch.equal(attention.k_proj.weight, attention.q_proj.weight)
        assert torch.equal(attention.o_proj.weight, attention.v_proj.weight.T)


def test_training_leaves_the_built_rows_alone_and_trains_the_rest():
    model, tokenizer = new_tiny(SIZE)
    table = model.get_input_embeddings().weight
    frozen = frozen_token_ids(tokenizer)
    label = tokenizer.convert_tokens_to_ids("A")
    before_frozen, before_label = table[frozen].clone(), table[label].clone()
    options = TrainOptions(steps=3, batch_size=2, weight_decay=0.0, log_every=10)
    train(model, tokenizer, tiny_samples(4), options, frozen_rows=frozen)
    assert torch.equal(table[frozen], before_frozen)
    assert not torch.equal(table[label], before_label), "the answer's letters are learned"
