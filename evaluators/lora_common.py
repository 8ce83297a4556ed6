"""What the LoRA-rank evaluators (``diffusion_lora``, ``sam_lora``) share.

- one LoRA rank per *group* of modules: a peft ``LoraConfig`` whose ``rank_pattern`` and
  ``alpha_pattern`` give every module of group g the rank the NCode chose for slot g
  (alpha = rank, so the LoRA scaling alpha/r is 1 for every rank and ranks compare fairly);
- the device (``--device``; CUDA when present, else the CPU) and mixed precision on GPUs
  (autocast bf16 where supported, else fp16 with a gradient scaler);
- the per-evaluation time limit (``--eval-timeout``), checked between training and sampling
  steps; going over raises ``TimeoutError``, which the evaluator tool records as a failed outcome;
- failures as exceptions: a CUDA out-of-memory error becomes ``MemoryError`` (recorded as
  "out of memory"), a NaN or infinite loss ``FloatingPointError``.
"""

from __future__ import annotations

import gc
import re
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch

from tools.evaluator import EvaluatorSetupError


def resolve_device(device: str | None) -> torch.device:
    """``None``/``auto``: CUDA when present, else the CPU; anything else must be a usable torch device."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise EvaluatorSetupError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise EvaluatorSetupError(f"--device {device} asked for, but no CUDA GPU is visible; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise EvaluatorSetupError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible (cuda:0 ...)"
            )
    elif resolved.type != "cpu":
        raise EvaluatorSetupError(f"--device {device}: only cpu and cuda devices are supported")
    return resolved


def check_budget(steps: int | None, eval_timeout: float | None, step_unit: str) -> None:
    """Refuse a non-positive --steps or --eval-timeout before anything loads."""
    if steps is not None and steps <= 0:
        raise EvaluatorSetupError(f"--steps must be a positive number of {step_unit}, got {steps}")
    if eval_timeout is not None and eval_timeout <= 0:
        raise EvaluatorSetupError(f"--eval-timeout must be a positive number of seconds, got {eval_timeout}")


def training_device(device: str | None) -> tuple[torch.device, torch.dtype | None, dict[str, float]]:
    """The device, its mixed-precision dtype, and what one evaluation asks of a Ray cluster there."""
    resolved = resolve_device(device)
    resources = {"num_cpus": 1, "num_gpus": 1} if resolved.type == "cuda" else {"num_cpus": 1}
    return resolved, amp_dtype(resolved), resources


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on a GPU (bf16 where supported, else fp16); ``None`` (full fp32) on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A live scaler only for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


class Deadline:
    """The per-evaluation time limit; ``check`` raises ``TimeoutError`` once it has passed."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds if seconds and seconds > 0 else None
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def check(self, where: str) -> None:
        if self.seconds is not None and self.elapsed() > self.seconds:
            raise TimeoutError(f"evaluation ran past --eval-timeout {self.seconds:g} s ({where})")


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run with ``count`` intra-op threads (``None``: leave as is). The tiny default models gain
    nothing from threads, and on a busy machine spinning threads make them several times slower."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def tiny_cpu_threads(device: torch.device, model: torch.nn.Module, limit: int = 20_000_000) -> int | None:
    """1 for a model under ``limit`` parameters on the CPU (see ``torch_threads``), else ``None``."""
    small = sum(p.numel() for p in model.parameters()) < limit
    return 1 if device.type == "cpu" and small else None


@contextmanager
def failures_as_errors(device: torch.device) -> Iterator[None]:
    """CUDA out-of-memory -> ``MemoryError``. GPU memory is released whatever happens: a failed
    evaluation's traceback frames (which hold its model copy) are cleared before the cache is emptied."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        first_line = (str(error).strip().splitlines() or ["CUDA out of memory"])[0]
        _release(device, error)
        raise MemoryError(f"out of memory on {device}: {first_line}") from None
    except BaseException as error:
        _release(device, error)
        raise
    else:
        _release(device, None)


def _release(device: torch.device, error: BaseException | None) -> None:
    if error is not None:
        traceback.clear_frames(error.__traceback__)  # finished frames only; file and line numbers survive
    if device.type == "cuda":  # on the CPU reference counting frees the copy; a full collection costs ~0.5 s
        gc.collect()
        torch.cuda.empty_cache()


def check_finite(value: torch.Tensor, what: str) -> float:
    number = float(value.detach().float().mean())
    if not np.isfinite(number):
        raise FloatingPointError(f"{what} is {number}")
    return number


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generators (peft draws the LoRA initialisation from them) and return a
    CPU generator for the evaluation's own noise; Python's and NumPy's global state is left alone."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def grouped_lora_config(groups: Sequence[Sequence[str]], ranks: Sequence[int], **extra: Any):
    """A peft LoraConfig targeting exactly the modules of ``groups`` (full module names), with
    group g's modules at rank ``ranks[g]`` and alpha equal to the rank."""
    from peft import LoraConfig

    if len(groups) != len(ranks):
        raise ValueError(f"{len(groups)} module groups but {len(ranks)} ranks")
    pattern = {re.escape(name): int(rank) for group, rank in zip(groups, ranks, strict=True) for name in group}
    names = [name for group in groups for name in group]
    return LoraConfig(
        r=int(ranks[0]),
        lora_alpha=int(ranks[0]),
        target_modules=names,
        rank_pattern=pattern,
        alpha_pattern=dict(pattern),
        lora_dropout=0.0,
        bias="none",
        **extra,
    )


def lora_parameter_count(model: torch.nn.Module, groups: Sequence[Sequence[str]], ranks: Sequence[int]) -> int:
    """The parameters ``grouped_lora_config(groups, ranks)`` adds to ``model``, from its modules' shapes alone:
    rank x (inputs + outputs) per linear module (LoRA's A and B, no bias). It is known before any training, so a
    ``--constraint lora_params<=N`` drops a candidate before it costs a fine-tune."""
    total = 0
    for group, rank in zip(groups, ranks, strict=True):
        for name in group:
            module = model.get_submodule(name)
            if not isinstance(module, torch.nn.Linear):
                raise TypeError(f"LoRA module {name} is a {type(module).__name__}; only linear modules are counted")
            total += int(rank) * (module.in_features + module.out_features)
    return total


def lora_ranks(model: torch.nn.Module, adapter: str = "default") -> dict[str, int]:
    """The rank of every LoRA module of a peft-wrapped model, by its name in the base model."""
    from peft.tuners.lora import LoraLayer

    ranks = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.r:
            ranks[name.removeprefix("base_model.model.")] = int(module.r[adapter])
    return ranks


def split_evenly(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """``items`` cut into ``parts`` contiguous runs whose lengths differ by at most one
    (item i goes to part floor(i * parts / len(items)))."""
    if len(items) < parts:
        raise ValueError(f"cannot split {len(items)} items into {parts} non-empty groups")
    out: list[list[Any]] = [[] for _ in range(parts)]
    for index, item in enumerate(items):
        out[index * parts // len(items)].append(item)
    return out
