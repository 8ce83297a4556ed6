"""A local model scored in this process: the ranker's questions answered without a server.

Why: ``transformers serve`` returns no logprobs, so behind it a one-digit answer is only its
greedy digit. Here the model's whole digit distribution is read off the first answer token,
and each candidate gets its expected grade, as vLLM's logprobs give it (``--ranker
inprocess[:PATH]``). There is no server to start, so the first decision comes sooner too.

The answers are the same as ``transformers serve``'s: the folder's chat template, greedy
decoding, in the dtype of the model card (``tests/agent/llm/test_in_process.py`` checks it).
Questions are answered one at a time under a lock: ``generate`` is not documented as safe to run
from several threads at once. A decision's graded questions (one per candidate, all sharing the
history) are answered together by :meth:`InProcessClient.grade_all`: one pass over their shared
prefix, one over the candidates' own tails, and the vocabulary's logits only at each answer's first
position, where the grade is read (the logits of every prompt position were three quarters of
the shipped model's work). Same grades, about a sixth of the time (BENCHMARKS.md §3).

A folder whose card names a committee (``members``: other models trained alike) grades with each, and a
candidate's grade is their mean: one training run's noise moves a search as much as a lever does, and the mean of
two reads a history better than either (BENCHMARKS.md §16). It is read only here: a server serves one model.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.utils import logging

from agent.llm.local_server import ServerError, check_model_dir
from agent.llm.ranker import DIGITS, Completion
from prompts.card import MODEL_CARD, committee_members, whole_card


class InProcessError(ServerError):
    """The local model cannot be loaded in this process."""


@dataclass
class Loaded:
    """One model folder in memory: what answering a question needs of it."""

    tokenizer: Any
    model: Any
    digit_ids: list[int | None]  # the tokens of 0-9; None where the vocabulary lacks one

    def reads_like(self, other: Loaded) -> bool:
        """Whether a question tokenizes alike for both (the same vocabulary and chat template): a committee
        member trained by the same recipe then reuses the tokens its model's question already has."""
        mine, theirs = (getattr(t, "backend_tokenizer", None) for t in (self.tokenizer, other.tokenizer))
        if mine is None or theirs is None or self.tokenizer.chat_template != other.tokenizer.chat_template:
            return False
        return mine.to_str() == theirs.to_str()

    def tokens(self, messages: list[dict[str, str]]) -> list[int]:
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]


def load(path: Path) -> Loaded:
    check_model_dir(path, "inprocess", InProcessError)
    dtype = whole_card(path).get("dtype", "float32")
    if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        raise InProcessError(
            f"{path / MODEL_CARD} names dtype {dtype!r}, not a torch dtype; write e.g. float32 or bfloat16"
        )
    logging.disable_progress_bar()  # the weights' loading bar would interleave with the search's output
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    except (OSError, ValueError) as error:
        raise InProcessError(f"cannot load the model in {path}: {error}") from None
    vocabulary = tokenizer.get_vocab()
    return Loaded(tokenizer, model, [vocabulary.get(digit) for digit in DIGITS])


def load_member(path: Path, owner: Path) -> Loaded:
    """A committee member, which must answer in digits like the model whose card names it."""
    try:
        member = load(path)
    except InProcessError as error:
        raise InProcessError(f"the committee member {path} that {owner / MODEL_CARD} names: {error}") from None
    if None in member.digit_ids:
        raise InProcessError(
            f"the committee member {path} that {owner / MODEL_CARD} names has no token for every digit 0-9, so "
            "it cannot grade; remove it from the card's members"
        )
    return member


class InProcessClient:
    """The :class:`agent.llm.ranker.ChatClient` contract (``complete``, ``check``) for a model folder.

    A folder whose card names a committee (``members``) grades with all of them: a question's expected grade is
    the mean of the members' expected grades, the answer's text the folder's own model's (the one a server
    would serve). ``members=False`` reads the folder's own model alone."""

    def __init__(self, path: Path, max_tokens: int, members: bool = True) -> None:
        own = load(path)
        self.tokenizer, self.model, self.digit_ids = own.tokenizer, own.model, own.digit_ids
        self.own = own
        self.members = [load_member(member, path) for member in committee_members(path)] if members else []
        self.reads_alike = [member.reads_like(own) for member in self.members]
        self.max_tokens = max_tokens
        self.lock = threading.Lock()

    def check(self) -> None:
        """Nothing to reach: the model loaded in the constructor."""

    def grade_all(self, prompts: list[list[dict[str, str]]]) -> list[Completion]:
        """Graded answers to several questions, as :meth:`complete` gives them one at a time: where the greedy
        first token is a digit, the answer is that digit and its grade the digit distribution's mean; any other
        question is answered by :meth:`complete` (greedy generation), which then decides as it always has.
        Identical questions (candidates whose nearest history reads the same) are answered once, so that they tie
        exactly as they do one at a time: rows of one batch may differ in the last bits."""
        if len(prompts) < 2 or None in self.digit_ids:
            return [self.complete(messages, grade=True) for messages in prompts]
        started = time.perf_counter()
        asked = [tuple(self.own.tokens(messages)) for messages in prompts]
        messages_of = dict(zip(asked, prompts, strict=True))  # one wording per distinct question
        unique = list(messages_of)
        row = {question: i for i, question in enumerate(unique)}
        with self.lock, torch.inference_mode():
            logits = vocabulary_logits(self.own, first_answer_states(self.own, [list(q) for q in unique]))
            grades = digit_mean(logits[:, self.digit_ids])
            for member, alike in zip(self.members, self.reads_alike, strict=True):
                ids = [list(q) if alike else member.tokens(messages_of[q]) for q in unique]
                grades = grades + digit_mean(digit_logits(member, first_answer_states(member, ids)))
        grades = grades / (1 + len(self.members))
        each_s, greedy_ids = (time.perf_counter() - started) / len(prompts), logits.argmax(-1).tolist()
        answers = []
        for question, messages in zip(asked, prompts, strict=True):
            greedy, grade = greedy_ids[row[question]], grades[row[question]]
            if greedy not in self.digit_ids:
                answers.append(self.complete(messages, grade=True))
                continue
            digit = DIGITS[self.digit_ids.index(greedy)]
            answers.append(Completion(digit, len(question), 1, each_s, 0, expected_grade=float(grade)))
        return answers

    def complete(self, messages: list[dict[str, str]], grade: bool = False) -> Completion:
        """The greedy answer; with ``grade``, the expected grade of the first token's digit distribution (the
        committee's mean, where the card names one)."""
        started = time.perf_counter()
        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with self.lock, torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_tokens,
                do_sample=False,
                output_logits=grade,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
            prompt_length = inputs["input_ids"].shape[1]
            answer = output.sequences[0, prompt_length:]
            text = self.tokenizer.decode(answer, skip_special_tokens=True)
            expected = None
            if grade and None not in self.digit_ids and text.strip()[:1].isdigit():
                grades = [float(digit_mean(output.logits[0][:1, self.digit_ids])[0])]
                for member in self.members:
                    states = first_answer_states(member, [member.tokens(messages)])
                    grades.append(float(digit_mean(digit_logits(member, states))[0]))
                expected = sum(grades) / len(grades)
        return Completion(
            text=text,
            prompt_tokens=prompt_length,
            completion_tokens=int(answer.numel()),
            latency_s=time.perf_counter() - started,
            transient_errors=0,
            expected_grade=expected,
        )


def first_answer_states(loaded: Loaded, ids: list[list[int]]) -> torch.Tensor:
    """The last hidden state at each question's first answer position, in one pass: the prefix every question
    shares once, then every question's own tail as one batch on a copy of that cache. Run under inference mode."""
    shared = shared_prefix(ids)
    tails = [question[shared:] for question in ids]
    width, pad = max(map(len, tails)), loaded.tokenizer.pad_token_id or loaded.tokenizer.eos_token_id
    decoder = loaded.model.get_decoder()
    cache = DynamicCache(config=loaded.model.config)
    if shared:
        decoder(input_ids=torch.tensor([ids[0][:shared]]), cache=cache, use_cache=True)
        cache.batch_repeat_interleave(len(ids))
    hidden = decoder(
        input_ids=torch.tensor([tail + [pad] * (width - len(tail)) for tail in tails]),
        attention_mask=torch.tensor([[1] * (shared + len(tail)) + [0] * (width - len(tail)) for tail in tails]),
        position_ids=(shared + torch.arange(width)).expand(len(ids), width),
        cache=cache,
        use_cache=True,
    ).last_hidden_state
    return hidden[torch.arange(len(ids)), torch.tensor([len(tail) - 1 for tail in tails])]


def vocabulary_logits(loaded: Loaded, states: torch.Tensor) -> torch.Tensor:
    """Every token's logit: what the greedy answer is read from."""
    return loaded.model.get_output_embeddings()(states).float()


def digit_logits(loaded: Loaded, states: torch.Tensor) -> torch.Tensor:
    """The digits' logits alone (a committee member's grade needs no other token's)."""
    head = loaded.model.get_output_embeddings()
    bias = None if head.bias is None else head.bias[loaded.digit_ids]
    return torch.nn.functional.linear(states, head.weight[loaded.digit_ids], bias).float()


def digit_mean(logits: torch.Tensor) -> torch.Tensor:
    """Each row's expected grade from the digits' logits (0-9 in order): the mean of their distribution."""
    return torch.softmax(logits.float(), dim=-1) @ torch.arange(10.0)


def shared_prefix(ids: list[list[int]]) -> int:
    """How many leading tokens every question shares, leaving each at least its last token to read a grade at."""
    shortest = min(map(len, ids))
    shared = 0
    while shared < shortest - 1 and all(question[shared] == ids[0][shared] for question in ids):
        shared += 1
    return shared
