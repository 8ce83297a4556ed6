"""A local model scored in this process: the ranker's questions answered without a server.

Why: ``transformers serve`` returns no logprobs, so behind it a one-digit answer is only its
greedy digit. Here the model's whole digit distribution is read off the first answer token,
and each candidate gets its expected grade, as vLLM's logprobs give it (``--ranker
inprocess[:PATH]``). There is no server to start, so the first decision comes sooner too.

The answers are the same as ``transformers serve``'s: the folder's chat template, greedy
decoding, in the dtype of the model card (``tests/agent/llm/test_in_process.py`` checks it).
Questions are answered one at a time under a lock: a tiny model answers one in a few
milliseconds, and ``generate`` is not documented as safe to run from several threads at once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
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
