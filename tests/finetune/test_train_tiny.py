"""LM-Searcher-tiny's training loop: the loss falls on a fixed batch; checkpoints resume the step count."""

from __future__ import annotations

import torch

from finetune.curate import CurationOptions, curate
from finetune.tiny_model import TinySize, new_tiny
from finetune.train_tiny import IGNORE, TrainOptions, answer_loss, collate, encode_sample, groups, pack, train
from tests.finetune.helpers import synthetic_domains

SIZE = TinySize(hidden=64, layers=2, heads=2, intermediate=128, max_positions=1024)


def tiny_samples(count: int) -> list[dict]:
    return curate(
        synthetic_domains(4), count, seed=1, options=CurationOptions(min_archs=10, max_archs=14, candidates=4)
    )


def batch_loss(model, tokenizer, samples) -> float:
    batch = collate([pack(tokenizer, [s], 1024) for s in samples], tokenizer.pad_token_id)
    with torch.no_grad():
        return model(**batch).loss.item()


def test_encoded_labels_learn_the_answer_only():
    _, tokenizer = new_tiny(SIZE)
    sample = tiny_samples(1)[0]
    _, labels = encode_sample(tokenizer, sample, 1024)
    learned = [label for label in labels if label != IGNORE]
    assert tokenizer.decode(learned) == sample["answer"] + tokenizer.eos_token
    assert labels[: len(labels) - len(learned)] == [IGNORE] * (len(labels) - len(learned))


def test_answer_loss_equals_the_full_models_loss():
    torch.manual_seed(0)
    model, tokenizer = new_tiny(SIZE)
    batch = collate([pack(tokenizer, [s], 1024) for s in tiny_samples(3)], tokenizer.pad_token_id)
    with torch.no_grad():
        assert torch.allclose(answer_loss(model, batch), model(**batch).loss, atol=1e-5)


def test_a_packed_draw_has_the_loss_of_its_examples_trained_one_by_one():
    """Packing shares the history's computation only: each block sees the prefix and itself."""
    torch.manual_seed(0)
    model, tokenizer = new_tiny(SIZE)
    options = CurationOptions(min_archs=12, max_archs=20, candidates=4, prompt_format="grade", history_cap=8)
    samples = curate(synthetic_domains(4), 12, seed=3, options=options)
    draws = groups(samples)
    assert [len(draw) for draw in draws] == [4, 4, 4]
    packed = [pack(tokenizer, draw, 1024) for draw in draws]
    alone = [pack(tokenizer, [sample], 1024) for sample in samples]
    assert sum(len(p.ids) for p in packed) < sum(len(p.ids) for p in alone) / 2
    with torch.no_grad():
        together = answer_loss(model, collate(packed, tokenizer.pad_token_id))
        one_by_one = answer_loss(model, collate(alone, tokenizer.pad_token_id))
    assert torch.allclose(together, one_by_one, atol=1e-5)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model, tokenizer = new_tiny(SIZE)
    samples = tiny_samples(4)
    before = batch_loss(model, tokenizer, samples)
    report = train(model, tokenizer, samples, TrainOptions(steps=15, batch_size=4, lr=3e-3, log_every=100), log=print)
    after = batch_loss(model, tokenizer, samples)
    assert report["steps"] == 15
    assert after < before - 0.5, (before, after)


def test_a_new_model_is_the_same_for_a_seed_and_leaves_the_callers_rng_alone():
    """The fixture's tiny model and `finetune tiny` start from the same weights in every process."""
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    first, _ = new_tiny(SIZE)
    assert torch.equal(torch.rand(1), expected_draw), "the caller's torch RNG is untouched"
    again, other = new_tiny(SIZE)[0], new_tiny(SIZE, seed=1)[0]
    weights = [(a, b, c) for a, b, c in zip(first.parameters(), again.parameters(), other.parameters(), strict=True)]
    assert all(torch.equal(a, b) for a, b, _ in weights)
    assert not all(torch.equal(a, c) for a, _, c in weights)


def test_checkpoint_resume_continues_the_step_count(tmp_path):
    samples = tiny_samples(4)
    checkpoint = tmp_path / "train_state.pt"
    model, tokenizer = new_tiny(SIZE)
    first = train(model, tokenizer, samples, TrainOptions(steps=3, batch_size=2, log_every=1), checkpoint, log=print)
    assert first["steps"] == 3 and checkpoint.is_file()
    assert torch.load(checkpoint, weights_only=False)["step"] == 3

    lines: list[str] = []
    model, tokenizer = new_tiny(SIZE)  # as a fresh process would: the model built again, then the checkpoint
    again = train(model, tokenizer, samples, TrainOptions(steps=5, batch_size=2, log_every=1), checkpoint, lines.append)
    assert any("resumed" in line and "step 3" in line for line in lines)
    assert again["steps"] == 5
    assert [line.split()[1] for line in lines if line.startswith("step ")] == ["4/5", "5/5"]
    assert torch.load(checkpoint, weights_only=False)["step"] == 5
