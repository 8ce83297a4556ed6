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
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.utils import logging

from agent.llm.local_server import ServerError, check_model_dir
from agent.llm.ranker import DIGITS, Completion
from prompts.card import model_card


class InProcessError(ServerError):
    """The local model cannot be loaded in this process."""


class InProcessClient:
    """The :class:`agent.llm.ranker.ChatClient` contract (``complete``, ``check``) for a model folder."""

    def __init__(self, path: Path, max_tokens: int) -> None:
        check_model_dir(path, "inprocess", InProcessError)
        dtype = model_card(path).get("dtype", "float32")
        self.max_tokens = max_tokens
        logging.disable_progress_bar()  # the weights' loading bar would interleave with the search's output
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
        except (OSError, ValueError) as error:
            raise InProcessError(f"cannot load the model in {path}: {error}") from None
        vocabulary = self.tokenizer.get_vocab()
        self.digit_ids = [vocabulary.get(digit) for digit in DIGITS]
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
        asked = [tuple(self._tokens(messages)) for messages in prompts]
        ids = [list(question) for question in dict.fromkeys(asked)]
        row = {tuple(question): i for i, question in enumerate(ids)}
        shared = shared_prefix(ids)
        tails = [question[shared:] for question in ids]
        width, pad = max(map(len, tails)), self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
        decoder = self.model.get_decoder()
        with self.lock, torch.inference_mode():
            cache = DynamicCache(config=self.model.config)
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
            last = hidden[torch.arange(len(ids)), torch.tensor([len(tail) - 1 for tail in tails])]
            logits = self.model.get_output_embeddings()(last).float()
        grades = torch.softmax(logits[:, self.digit_ids], dim=-1) @ torch.arange(10.0)
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

    def _tokens(self, messages: list[dict[str, str]]) -> list[int]:
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]

    def complete(self, messages: list[dict[str, str]], grade: bool = False) -> Completion:
        """The greedy answer; with ``grade``, the expected grade of the first token's digit distribution."""
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
            digits = torch.softmax(output.logits[0][0, self.digit_ids].float(), dim=-1)
            expected = float(digits @ torch.arange(10.0))
        return Completion(
            text=text,
            prompt_tokens=prompt_length,
            completion_tokens=int(answer.numel()),
            latency_s=time.perf_counter() - started,
            transient_errors=0,
            expected_grade=expected,
        )


def shared_prefix(ids: list[list[int]]) -> int:
    """How many leading tokens every question shares, leaving each at least its last token to read a grade at."""
    shortest = min(map(len, ids))
    shared = 0
    while shared < shortest - 1 and all(question[shared] == ids[0][shared] for question in ids):
        shared += 1
    return shared
