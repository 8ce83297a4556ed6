"""HAT (Wang et al., ACL 2020): sub-transformers scored with weights inherited from a SuperTransformer.

A weight-sharing SuperTransformer (6 encoder layers, up to 6 decoder layers, the widest options
of the ``hat`` space) is trained once on a parallel corpus with the sandwich rule (each step
accumulates the gradients of the largest, the smallest and two random sub-transformers). A
sub-transformer is an NCode of ``hat_space``: as in HAT's ``set_sample_config``, it uses the
first ``d`` columns of the shared embedding and of every weight that reads the embedding, the
first ``f`` rows of each FFN's first layer, and the first ``decoder_layers`` decoder layers.
Attention keeps HAT's fixed q/k/v width (``qkv_dim`` = 512 at full size); the number of heads
only changes how it is split (head size = qkv_dim / heads).

Score: the sub-transformer's validation cross-entropy (nats per target token, teacher forced),
**minimised**; HAT ranks SubTransformers the same way. Each evaluation first measures the
latency of translating one validation sentence on the current device (median of a few greedy
decodes) and returns ``infeasible`` above ``--latency-limit-ms``. The final report adds BLEU
(sacrebleu) of greedy decoding of the validation set.

Dimensions are the space's options divided by ``--hat-scale`` (default 16: embeddings 32/40,
FFN 64/128/192, qkv 32; 1 = HAT's real sizes). Without ``--data`` the corpus is a small
synthetic "translation" made here (sentences of a made-up language, translated word by word
into another and reversed). Trained super-networks are cached under ``$LMSEARCHER_CACHE``
(default ``~/.cache/lm-searcher``) keyed by corpus, sizes, steps and seed; ``--model-path``
loads one directly. ``--eval-timeout`` bounds each evaluation (checked between decoding steps
and validation batches; super-network training is set-up, not an evaluation). Tiny models run
and are timed on one CPU thread.

Simplifications against HAT's fairseq code: pre-norm layers, whitespace tokens (apply BPE to a
real corpus beforehand), no "arbitrary encoder-decoder attention" (the space has no slot for it),
and a measured latency instead of HAT's latency predictor.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evaluators.lora_common import Deadline, resolve_device, torch_threads
from tools.evaluator import Evaluator, EvaluatorSetupError, Metric, Outcome
from tools.ncode import SearchSpace, decode, sample
from tools.spaces import HAT_LAYERS, hat_space

CHECKPOINT_FORMAT = "lm-searcher-hat-supernet/1"
CACHE_ENV = "LMSEARCHER_CACHE"
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
SPLIT_FILES = ("train.src", "train.tgt", "valid.src", "valid.tgt")
DEFAULT_SCALE = 16
DEFAULT_LATENCY_LIMIT_MS = 500.0
DEFAULT_STEPS = 300  # sandwich steps on the synthetic corpus (about 40-60 s on two busy CPU cores)
TINY_WIDTH = 128  # super-networks this narrow run on one CPU thread (see cpu_threads)


# ---------------------------------------------------------------- corpus


@dataclass
class Corpus:
    """Whitespace-tokenised sentence pairs; ``name`` says where they came from."""

    name: str
    train: list[tuple[list[str], list[str]]]
    valid: list[tuple[list[str], list[str]]]

    def digest(self) -> str:
        h = hashlib.sha256()
        for split in (self.train, self.valid):
            for src, tgt in split:
                h.update((" ".join(src) + "\t" + " ".join(tgt) + "\n").encode())
            h.update(b"--split--")
        return h.hexdigest()


def synthetic_corpus(train_pairs: int = 400, valid_pairs: int = 40, seed: int = 1234) -> Corpus:
    """A toy translation task: a made-up source language whose sentences (3-7 words of 16)
    translate word by word into a second made-up language, in reverse order. Always the same
    corpus (its own fixed seed), whatever the search's seed."""
    rng = random.Random(seed)
    consonants, vowels = "bdgklmnprstvz", "aeiou"
    source_words: list[str] = []
    while len(source_words) < 16:
        word = rng.choice(consonants) + rng.choice(vowels) + rng.choice(consonants) + rng.choice(vowels)
        if word not in source_words:
            source_words.append(word)
    target_words = [word.upper()[::-1] + "X" for word in source_words]
    rng.shuffle(target_words)
    lexicon = dict(zip(source_words, target_words, strict=True))
    seen: set[tuple[str, ...]] = set()
    pairs: list[tuple[list[str], list[str]]] = []
    while len(pairs) < train_pairs + valid_pairs:
        src = tuple(rng.choice(source_words) for _ in range(rng.randint(3, 7)))
        if src in seen:
            continue
        seen.add(src)
        pairs.append((list(src), [lexicon[w] for w in reversed(src)]))
    return Corpus("synthetic", pairs[:train_pairs], pairs[train_pairs:])


def read_corpus(folder: str, need_train: bool = True) -> Corpus:
    """train.src/train.tgt/valid.src/valid.tgt, one sentence per line, aligned by line."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise EvaluatorSetupError(
            f"--data {folder} is not a folder; hat_mt needs a folder with {', '.join(SPLIT_FILES)} "
            "(one sentence per line, tokens separated by spaces), or no --data for the synthetic corpus"
        )
    splits: dict[str, list[tuple[list[str], list[str]]]] = {}
    for split in ("train", "valid") if need_train else ("valid",):
        sides = []
        for side in ("src", "tgt"):
            path = root / f"{split}.{side}"
            if not path.is_file():
                raise EvaluatorSetupError(
                    f"parallel corpus file {path} is missing; --data needs {', '.join(SPLIT_FILES)} "
                    "(one sentence per line)"
                )
            try:
                sides.append([line.split() for line in path.read_text(encoding="utf-8").splitlines()])
            except (OSError, UnicodeDecodeError) as error:
                raise EvaluatorSetupError(f"cannot read {path} as UTF-8 text ({error})") from None
        if len(sides[0]) != len(sides[1]):
            raise EvaluatorSetupError(
                f"{root}/{split}.src has {len(sides[0])} lines but {split}.tgt has {len(sides[1])}; "
                "they must be aligned line by line"
            )
        pairs = [(s, t) for s, t in zip(*sides, strict=True) if s and t]
        if not pairs:
            raise EvaluatorSetupError(f"{root}/{split}.src and {split}.tgt hold no non-empty sentence pairs")
        splits[split] = pairs
    return Corpus(str(root.resolve()), splits.get("train", []), splits["valid"])


def build_vocab(corpus: Corpus, max_size: int = 32000) -> list[str]:
    counts = Counter(token for src, tgt in corpus.train for token in (*src, *tgt))
    return [*SPECIALS, *(token for token, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_size])]


# ---------------------------------------------------------------- the SuperTransformer


@dataclass(frozen=True)
class SuperConfig:
    """Largest dimensions of the super-network (already divided by the scale)."""

    vocab_size: int
    embed_dim: int
    ffn_dim: int
    qkv_dim: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    max_positions: int
    dropout: float
    scale: int


@dataclass(frozen=True)
class SubConfig:
    """A sub-transformer's dimensions (scaled); per-layer tuples."""

    encoder_embed: int
    decoder_embed: int
    decoder_layers: int
    encoder_ffn: tuple[int, ...]
    encoder_heads: tuple[int, ...]
    decoder_ffn: tuple[int, ...]
    decoder_self_heads: tuple[int, ...]
    decoder_cross_heads: tuple[int, ...]


def sub_config(space: SearchSpace, ncode: str, scale: int) -> SubConfig:
    """Decode an NCode of ``hat_space`` into scaled dimensions (unused decoder slots dropped)."""
    c = decode(space, ncode)
    layers = int(c["decoder_layers"])
    return SubConfig(
        encoder_embed=c["encoder_embed_dim"] // scale,
        decoder_embed=c["decoder_embed_dim"] // scale,
        decoder_layers=layers,
        encoder_ffn=tuple(c[f"encoder_ffn_{i}"] // scale for i in range(HAT_LAYERS)),
        encoder_heads=tuple(c[f"encoder_heads_{i}"] for i in range(HAT_LAYERS)),
        decoder_ffn=tuple(c[f"decoder_ffn_{i}"] // scale for i in range(layers)),
        decoder_self_heads=tuple(c[f"decoder_self_heads_{i}"] for i in range(layers)),
        decoder_cross_heads=tuple(c[f"decoder_cross_heads_{i}"] for i in range(layers)),
    )


def extreme_config(space: SearchSpace, scale: int, largest: bool) -> SubConfig:
    pick = max if largest else min
    options = {slot.name: pick(slot.options) for slot in space.slots}
    layers = options["decoder_layers"]
    return SubConfig(
        options["encoder_embed_dim"] // scale,
        options["decoder_embed_dim"] // scale,
        layers,
        tuple(options[f"encoder_ffn_{i}"] // scale for i in range(HAT_LAYERS)),
        tuple(options[f"encoder_heads_{i}"] for i in range(HAT_LAYERS)),
        tuple(options[f"decoder_ffn_{i}"] // scale for i in range(layers)),
        tuple(options[f"decoder_self_heads_{i}"] for i in range(layers)),
        tuple(options[f"decoder_cross_heads_{i}"] for i in range(layers)),
    )


def super_config(space: SearchSpace, scale: int, vocab_size: int, max_positions: int, dropout: float) -> SuperConfig:
    """The widest options of the space, divided by ``scale`` (HAT's qkv_dim is 512 at full size)."""
    widths = [o for s in space.slots if s.name.endswith("_dim") or "_ffn_" in s.name for o in s.options]
    heads = [o for s in space.slots if "heads" in s.name for o in s.options]
    qkv = 512 // scale if scale > 0 else 0
    if scale < 1 or any(w % scale for w in [*widths, 512]) or any(qkv % h for h in heads):
        raise EvaluatorSetupError(
            f"--hat-scale {scale} does not divide HAT's sizes ({sorted(set(widths))}, qkv 512) into whole "
            f"numbers divisible by the head counts {sorted(set(heads))}; use 1, 2, 4, 8, 16, 32 or 64"
        )
    big = extreme_config(space, scale, largest=True)
    return SuperConfig(
        vocab_size=vocab_size,
        embed_dim=max(big.encoder_embed, big.decoder_embed),
        ffn_dim=max(*big.encoder_ffn, *big.decoder_ffn),
        qkv_dim=qkv,
        heads=max(heads),
        encoder_layers=HAT_LAYERS,
        decoder_layers=HAT_LAYERS,
        max_positions=max_positions,
        dropout=dropout,
        scale=scale,
    )


class SuperLinear(nn.Module):
    """A linear layer whose sampled sub-layer uses ``weight[:out, :in]`` (HAT's LinearSuper)."""

    def __init__(self, in_max: int, out_max: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_max, in_max))
        self.bias = nn.Parameter(torch.zeros(out_max))
        nn.init.xavier_uniform_(self.weight)
        self.in_dim, self.out_dim = in_max, out_max

    def set_sample_config(self, in_dim: int, out_dim: int) -> None:
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[: self.out_dim, : self.in_dim], self.bias[: self.out_dim])

    def sampled_params(self) -> int:
        return self.out_dim * self.in_dim + self.out_dim


class SuperLayerNorm(nn.Module):
    def __init__(self, max_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(max_dim))
        self.bias = nn.Parameter(torch.zeros(max_dim))
        self.dim = max_dim

    def set_sample_config(self, dim: int) -> None:
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), self.weight[: self.dim], self.bias[: self.dim])

    def sampled_params(self) -> int:
        return 2 * self.dim


class SuperAttention(nn.Module):
    """Multi-head attention with a fixed q/k/v width; inputs and output sliced to the sampled
    embedding widths, heads splitting qkv_dim (HAT's MultiheadAttentionSuper)."""

    def __init__(self, q_max: int, kv_max: int, qkv_dim: int, dropout: float) -> None:
        super().__init__()
        self.q, self.k, self.v = SuperLinear(q_max, qkv_dim), SuperLinear(kv_max, qkv_dim), SuperLinear(kv_max, qkv_dim)
        self.out = SuperLinear(qkv_dim, q_max)
        self.qkv_dim, self.heads, self.dropout = qkv_dim, 1, dropout

    def set_sample_config(self, q_dim: int, kv_dim: int, heads: int) -> None:
        self.q.set_sample_config(q_dim, self.qkv_dim)
        self.k.set_sample_config(kv_dim, self.qkv_dim)
        self.v.set_sample_config(kv_dim, self.qkv_dim)
        self.out.set_sample_config(self.qkv_dim, q_dim)
        self.heads = heads

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        head_dim = self.qkv_dim // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, -1, self.heads, head_dim).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            split(self.q(x)),
            split(self.k(memory)),
            split(self.v(memory)),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal,
        )
        return self.out(attended.transpose(1, 2).reshape(batch, length, self.qkv_dim))

    def sampled_params(self) -> int:
        return sum(layer.sampled_params() for layer in (self.q, self.k, self.v, self.out))


class FeedForward(nn.Module):
    def __init__(self, embed_max: int, ffn_max: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2, self.dropout = SuperLinear(embed_max, ffn_max), SuperLinear(ffn_max, embed_max), dropout

    def set_sample_config(self, embed: int, ffn: int) -> None:
        self.fc1.set_sample_config(embed, ffn)
        self.fc2.set_sample_config(ffn, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.dropout(F.relu(self.fc1(x)), self.dropout, self.training))

    def sampled_params(self) -> int:
        return self.fc1.sampled_params() + self.fc2.sampled_params()


class EncoderLayer(nn.Module):
    def __init__(self, cfg: SuperConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = SuperLayerNorm(cfg.embed_dim), SuperLayerNorm(cfg.embed_dim)
        self.attn = SuperAttention(cfg.embed_dim, cfg.embed_dim, cfg.qkv_dim, cfg.dropout)
        self.ffn = FeedForward(cfg.embed_dim, cfg.ffn_dim, cfg.dropout)
        self.dropout = cfg.dropout

    def set_sample_config(self, embed: int, ffn: int, heads: int) -> None:
        self.norm1.set_sample_config(embed)
        self.norm2.set_sample_config(embed)
        self.attn.set_sample_config(embed, embed, heads)
        self.ffn.set_sample_config(embed, ffn)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # pre-norm residual blocks
        h = self.norm1(x)
        x = x + F.dropout(self.attn(h, h, mask), self.dropout, self.training)
        return x + F.dropout(self.ffn(self.norm2(x)), self.dropout, self.training)

    def sampled_params(self) -> int:
        return sum(m.sampled_params() for m in (self.norm1, self.norm2, self.attn, self.ffn))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: SuperConfig) -> None:
        super().__init__()
        self.norms = nn.ModuleList(SuperLayerNorm(cfg.embed_dim) for _ in range(3))
        self.self_attn = SuperAttention(cfg.embed_dim, cfg.embed_dim, cfg.qkv_dim, cfg.dropout)
        self.cross_attn = SuperAttention(cfg.embed_dim, cfg.embed_dim, cfg.qkv_dim, cfg.dropout)
        self.ffn = FeedForward(cfg.embed_dim, cfg.ffn_dim, cfg.dropout)
        self.dropout = cfg.dropout

    def set_sample_config(self, embed: int, encoder_embed: int, ffn: int, self_heads: int, cross_heads: int) -> None:
        for norm in self.norms:
            norm.set_sample_config(embed)
        self.self_attn.set_sample_config(embed, embed, self_heads)
        self.cross_attn.set_sample_config(embed, encoder_embed, cross_heads)
        self.ffn.set_sample_config(embed, ffn)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        h = self.norms[0](x)
        x = x + F.dropout(self.self_attn(h, h, causal=True), self.dropout, self.training)
        x = x + F.dropout(self.cross_attn(self.norms[1](x), memory, memory_mask), self.dropout, self.training)
        return x + F.dropout(self.ffn(self.norms[2](x)), self.dropout, self.training)

    def sampled_params(self) -> int:
        return sum(m.sampled_params() for m in (*self.norms, self.self_attn, self.cross_attn, self.ffn))


class SuperTransformer(nn.Module):
    """Encoder-decoder with a shared (tied) embedding; ``set_sample_config`` picks the sub-network."""

    def __init__(self, cfg: SuperConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Parameter(torch.randn(cfg.vocab_size, cfg.embed_dim) * cfg.embed_dim**-0.5)
        with torch.no_grad():
            self.embed[PAD].zero_()
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.encoder_norm, self.decoder_norm = SuperLayerNorm(cfg.embed_dim), SuperLayerNorm(cfg.embed_dim)
        self.sample: SubConfig | None = None
        self._positions: dict[tuple[int, str], torch.Tensor] = {}

    def set_sample_config(self, sub: SubConfig) -> None:
        if sub.decoder_layers > len(self.decoder) or max(sub.encoder_embed, sub.decoder_embed) > self.cfg.embed_dim:
            raise ValueError(f"sub-transformer {sub} is larger than the super-network {self.cfg}")
        self.sample = sub
        for i, layer in enumerate(self.encoder):
            layer.set_sample_config(sub.encoder_embed, sub.encoder_ffn[i], sub.encoder_heads[i])
        for i in range(sub.decoder_layers):
            self.decoder[i].set_sample_config(
                sub.decoder_embed,
                sub.encoder_embed,
                sub.decoder_ffn[i],
                sub.decoder_self_heads[i],
                sub.decoder_cross_heads[i],
            )
        self.encoder_norm.set_sample_config(sub.encoder_embed)
        self.decoder_norm.set_sample_config(sub.decoder_embed)

    def sampled_params(self) -> int:
        """Parameters of the sampled sub-transformer, embeddings excluded (they depend on the vocabulary)."""
        assert self.sample is not None
        used = [*self.encoder, *self.decoder[: self.sample.decoder_layers], self.encoder_norm, self.decoder_norm]
        return sum(module.sampled_params() for module in used)

    def _embed(self, tokens: torch.Tensor, dim: int) -> torch.Tensor:
        key = (dim, str(tokens.device))
        if key not in self._positions or self._positions[key].shape[0] < tokens.shape[1]:
            length = max(tokens.shape[1], self.cfg.max_positions)
            position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
            rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
            table = torch.zeros(length, dim)
            table[:, 0::2] = torch.sin(position * rate)
            table[:, 1::2] = torch.cos(position * rate)[:, : dim // 2]
            self._positions[key] = table.to(tokens.device)
        x = F.embedding(tokens, self.embed[:, :dim], PAD) * math.sqrt(dim) + self._positions[key][: tokens.shape[1]]
        return F.dropout(x, self.cfg.dropout, self.training)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.sample is not None, "call set_sample_config first"
        mask = (src != PAD)[:, None, None, :]  # batch x 1 x 1 x source: True where a key takes part
        x = self._embed(src, self.sample.encoder_embed)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.encoder_norm(x), mask

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        assert self.sample is not None
        x = self._embed(tgt_in, self.sample.decoder_embed)
        for layer in self.decoder[: self.sample.decoder_layers]:
            x = layer(x, memory, memory_mask)
        return F.linear(self.decoder_norm(x), self.embed[:, : self.sample.decoder_embed])

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, mask = self.encode(src)
        return self.decode(tgt_in, memory, mask)


# ---------------------------------------------------------------- data as tensors, training, decoding


def to_ids(tokens: list[str], index: dict[str, int], limit: int) -> list[int]:
    return [index.get(token, UNK) for token in tokens[:limit]]


def pad(rows: list[list[int]]) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [PAD] * (width - len(row)) for row in rows], dtype=torch.long)


def make_batch(
    pairs: list[tuple[list[str], list[str]]], index: dict[str, int], max_positions: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source ids, decoder input (<s> + target) and decoder output (target + </s>)."""
    src = [to_ids(s, index, max_positions) for s, _ in pairs]
    tgt = [to_ids(t, index, max_positions - 1) for _, t in pairs]
    return (
        pad(src).to(device),
        pad([[BOS, *t] for t in tgt]).to(device),
        pad([[*t, EOS] for t in tgt]).to(device),
    )


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 40
    label_smoothing: float = 0.1
    random_subnets: int = 2


def train_supernet(
    model: SuperTransformer,
    corpus: Corpus,
    vocab: list[str],
    space: SearchSpace,
    train: TrainConfig,
    seed: int,
    device: torch.device,
    log: Any = None,
) -> None:
    """Sandwich rule: each step accumulates the gradients of the largest, the smallest and
    ``random_subnets`` random sub-transformers on one batch."""
    index = {token: i for i, token in enumerate(vocab)}
    rng = random.Random(seed)
    scale = model.cfg.scale
    largest, smallest = extreme_config(space, scale, True), extreme_config(space, scale, False)
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, betas=(0.9, 0.98), eps=1e-9)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / train.warmup) * max(0.05, 1 - step / max(1, train.steps))
    )
    model.train()
    started = time.perf_counter()
    for step in range(train.steps):
        pairs = [corpus.train[rng.randrange(len(corpus.train))] for _ in range(train.batch_size)]
        src, tgt_in, tgt_out = make_batch(pairs, index, model.cfg.max_positions, device)
        subnets = [largest, smallest] + [
            sub_config(space, sample(space, rng), scale) for _ in range(train.random_subnets)
        ]
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for sub in subnets:
            model.set_sample_config(sub)
            logits = model(src, tgt_in)
            loss = F.cross_entropy(
                logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD, label_smoothing=train.label_smoothing
            )
            (loss / len(subnets)).backward()
            total += loss.item() / len(subnets)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if log and (step + 1) % max(1, train.steps // 5) == 0:
            log(f"step {step + 1}/{train.steps}: sandwich loss {total:.3f} ({time.perf_counter() - started:.0f} s)")
    model.eval()


@torch.inference_mode()
def greedy_decode(
    model: SuperTransformer, src: torch.Tensor, max_steps: int, stop: bool = True, deadline: Deadline | None = None
) -> torch.Tensor:
    """Greedy translations (ids after <s>); ``stop=False`` always runs ``max_steps`` steps (latency)."""
    memory, mask = model.encode(src)
    ys = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for _ in range(max_steps):
        if deadline is not None:
            deadline.check("greedy decoding")
        following = model.decode(ys, memory, mask)[:, -1].argmax(-1)
        following = following.masked_fill(done, PAD)
        ys = torch.cat([ys, following[:, None]], dim=1)
        done |= following == EOS
        if stop and bool(done.all()):
            break
    return ys[:, 1:]


def detokenize(ids: list[int], vocab: list[str]) -> str:
    words = []
    for i in ids:
        if i in (EOS, PAD):
            break
        words.append(vocab[i])
    return " ".join(words)


# ---------------------------------------------------------------- checkpoints and the cache


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lm-searcher").expanduser() / "hat_mt"


def save_checkpoint(path: Path, model: SuperTransformer, vocab: list[str], corpus: Corpus, extra: dict) -> None:
    """Write atomically (temporary file in the same folder, then rename); no partial file is left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "super": asdict(model.cfg),
        "vocab": vocab,
        "corpus": corpus.name,
        "corpus_digest": corpus.digest(),
        "extra": extra,
        "state_dict": state,
    }
    handle, temporary = tempfile.mkstemp(prefix=".supernet-", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def load_checkpoint(path: Path, device: torch.device) -> tuple[SuperTransformer, dict[str, Any]]:
    if not path.is_file():
        raise EvaluatorSetupError(
            f"--model-path {path} does not exist; train one by running hat_mt without --model-path "
            f"(the trained super-network is cached under {cache_dir()})"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a {CHECKPOINT_FORMAT} checkpoint")
        model = SuperTransformer(SuperConfig(**payload["super"]))
        model.load_state_dict(payload["state_dict"])
    except Exception as error:  # torch.load and load_state_dict raise many kinds
        raise EvaluatorSetupError(
            f"{path} is not a hat_mt super-network checkpoint ({type(error).__name__}: {str(error)[:200]}); "
            "pass a file written by hat_mt (see its cache folder) or drop --model-path to train one"
        ) from None
    return model.to(device).eval(), payload


# ---------------------------------------------------------------- the evaluator


class HatMTEvaluator(Evaluator):
    """Validation loss of sub-transformers with inherited weights (minimised); BLEU in the final report."""

    def __init__(
        self,
        data: str | None = None,
        model_path: str | None = None,
        latency_limit_ms: float | None = None,
        device: str | None = None,
        steps: int | None = None,
        eval_timeout: float | None = None,
        seed: int = 0,
        scale: int | None = None,
        latency_runs: int = 5,
        log: Any = None,
    ) -> None:
        self.space = hat_space()
        self.device = resolve_device(device)
        self.latency_limit_ms = DEFAULT_LATENCY_LIMIT_MS if latency_limit_ms is None else float(latency_limit_ms)
        if self.latency_limit_ms <= 0:
            raise EvaluatorSetupError(f"--latency-limit-ms must be positive, got {latency_limit_ms}")
        if eval_timeout is not None and eval_timeout <= 0:
            raise EvaluatorSetupError(f"--eval-timeout must be a positive number of seconds, got {eval_timeout}")
        if steps is not None and steps < 1:
            raise EvaluatorSetupError(f"--steps must be at least 1, got {steps}")
        self.eval_timeout = eval_timeout
        self.latency_runs = latency_runs
        self.log = log if log is not None else (lambda line: print(f"hat_mt: {line}", file=sys.stderr, flush=True))
        torch.manual_seed(seed)
        if model_path:
            self.model, payload = load_checkpoint(Path(model_path).expanduser(), self.device)
            self.vocab: list[str] = list(payload["vocab"])
            if not data and payload.get("corpus") != "synthetic":
                raise EvaluatorSetupError(
                    f"{model_path} was trained on the corpus {payload.get('corpus')}; pass that folder with --data "
                    "(its valid.src/valid.tgt score the sub-transformers)"
                )
            if scale is not None and scale != self.model.cfg.scale:
                raise EvaluatorSetupError(
                    f"{model_path} holds a 1/{self.model.cfg.scale}-size super-network; drop --hat-scale {scale}"
                )
            self.corpus = read_corpus(data, need_train=False) if data else synthetic_corpus()
            self.checkpoint = Path(model_path).expanduser()
        else:
            self.corpus = read_corpus(data) if data else synthetic_corpus()
            self.vocab = build_vocab(self.corpus)
            longest = max(len(side) for pair in (*self.corpus.train, *self.corpus.valid) for side in pair)
            cfg = super_config(
                self.space,
                DEFAULT_SCALE if scale is None else scale,
                len(self.vocab),
                max_positions=min(256, longest + 2),
                dropout=0.0 if data is None else 0.1,
            )
            train = TrainConfig(steps=steps or (DEFAULT_STEPS if data is None else 20000))
            key = hashlib.sha256(
                json.dumps(
                    [CHECKPOINT_FORMAT, self.corpus.digest(), asdict(cfg), asdict(train), seed], sort_keys=True
                ).encode()
            ).hexdigest()[:16]
            self.checkpoint = cache_dir() / f"supernet-{key}.pt"
            if self.checkpoint.is_file():
                self.model, _ = load_checkpoint(self.checkpoint, self.device)
            else:
                self.log(
                    f"training the SuperTransformer on the {self.corpus.name} corpus "
                    f"({len(self.corpus.train)} pairs, {train.steps} sandwich steps, {self.device}); once per corpus "
                    f"and config, cached at {self.checkpoint}"
                )
                started = time.perf_counter()
                self.model = SuperTransformer(cfg).to(self.device)
                with torch_threads(1 if self.device.type == "cpu" and cfg.embed_dim <= TINY_WIDTH else None):
                    train_supernet(self.model, self.corpus, self.vocab, self.space, train, seed, self.device, self.log)
                save_checkpoint(self.checkpoint, self.model, self.vocab, self.corpus, {"train": asdict(train)})
                self.log(f"trained in {time.perf_counter() - started:.1f} s")
        self.scale = self.model.cfg.scale
        # tiny models run faster and time more steadily on one CPU thread (many small ops; on a busy
        # machine spinning threads wait on each other); larger ones keep torch's default
        self._threads = 1 if self.device.type == "cpu" and self.model.cfg.embed_dim <= TINY_WIDTH else None
        self.resources = {"num_cpus": 1, "num_gpus": 1} if self.device.type == "cuda" else {"num_cpus": 1}
        self.index = {token: i for i, token in enumerate(self.vocab)}
        self.dataset = "synthetic" if self.corpus.name == "synthetic" else Path(self.corpus.name).name
        self.metric = Metric(
            "valid_loss",
            False,
            "validation cross-entropy (nats/token) of the sub-transformer with SuperTransformer weights",
        )

    def describe(self) -> str:
        return (
            f"hat_mt: {self.metric.name} (minimised) of HAT sub-transformers at 1/{self.scale} size on "
            f"{self.device}, latency limit {self.latency_limit_ms:g} ms, corpus {self.corpus.name}"
        )

    # -- measurements

    def _latency_ms(self, deadline: Deadline | None) -> float:
        """Median milliseconds to translate the first validation sentence (greedy, as many steps as
        its reference has tokens plus one, no early stop), after one warm-up run."""
        src_tokens, tgt_tokens = self.corpus.valid[0]
        src, _, _ = make_batch([(src_tokens, tgt_tokens)], self.index, self.model.cfg.max_positions, self.device)
        steps = min(len(tgt_tokens) + 1, self.model.cfg.max_positions)
        times = []
        for run in range(self.latency_runs + 1):  # the first run warms up
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            started = time.perf_counter()
            greedy_decode(self.model, src, steps, stop=False, deadline=deadline)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            if run:
                times.append((time.perf_counter() - started) * 1000)
        return median(times)

    @torch.inference_mode()
    def _valid_loss(self, deadline: Deadline, batch_size: int = 64) -> float:
        total, tokens = 0.0, 0
        for start in range(0, len(self.corpus.valid), batch_size):
            deadline.check("validation loss")
            src, tgt_in, tgt_out = make_batch(
                self.corpus.valid[start : start + batch_size], self.index, self.model.cfg.max_positions, self.device
            )
            logits = self.model(src, tgt_in)
            total += F.cross_entropy(
                logits.flatten(0, 1).float(), tgt_out.flatten(), ignore_index=PAD, reduction="sum"
            ).item()
            tokens += int((tgt_out != PAD).sum())
        return total / max(1, tokens)

    def bleu(self, ncode: str, batch_size: int = 64) -> float:
        import sacrebleu

        self.model.set_sample_config(sub_config(self.space, ncode, self.scale))
        hypotheses, references = [], []
        for start in range(0, len(self.corpus.valid), batch_size):
            chunk = self.corpus.valid[start : start + batch_size]
            src, _, _ = make_batch(chunk, self.index, self.model.cfg.max_positions, self.device)
            longest = max(len(t) for _, t in chunk)
            out = greedy_decode(self.model, src, min(2 * longest + 10, self.model.cfg.max_positions))
            hypotheses += [detokenize(row, self.vocab) for row in out.tolist()]
            references += [" ".join(t) for _, t in chunk]
        return float(sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none").score)

    # -- the Evaluator interface

    def evaluate(self, ncode: str) -> Outcome:
        with torch_threads(self._threads):
            return self._evaluate(ncode)

    def _evaluate(self, ncode: str) -> Outcome:
        deadline = Deadline(self.eval_timeout)
        sub = sub_config(self.space, ncode, self.scale)
        self.model.eval()
        self.model.set_sample_config(sub)
        metrics: dict[str, Any] = {"params": self.model.sampled_params()}
        try:
            metrics["latency_ms"] = round(self._latency_ms(deadline), 3)
            if metrics["latency_ms"] > self.latency_limit_ms:
                return Outcome(
                    None,
                    metrics,
                    status="infeasible",
                    error=f"latency {metrics['latency_ms']:.1f} ms > limit {self.latency_limit_ms:g} ms",
                )
            loss = self._valid_loss(deadline)
        except TimeoutError as error:  # Deadline.check: recorded as failed, with what was measured
            return Outcome(None, metrics, status="failed", error=f"TimeoutError: {error}")
        metrics["valid_ppl"] = round(math.exp(min(loss, 50.0)), 4)
        return Outcome(loss, metrics)

    def metric_names(self) -> frozenset[str]:
        return frozenset({self.metric.name, "params", "latency_ms", "valid_ppl", "bleu"})

    def known_before(self, ncode: str) -> dict[str, float]:
        """The sub-transformer's parameter count: its sizes alone decide it (``--constraint params<=N``)."""
        self.model.set_sample_config(sub_config(self.space, ncode, self.scale))
        return {"params": float(self.model.sampled_params())}

    def final_metrics(self, ncode: str) -> dict[str, Any]:
        with torch_threads(self._threads):
            return self._final_metrics(ncode)

    def _final_metrics(self, ncode: str) -> dict[str, Any]:
        sub = sub_config(self.space, ncode, self.scale)
        self.model.eval()
        self.model.set_sample_config(sub)
        return {
            "bleu": self.bleu(ncode),
            "params": self.model.sampled_params(),
            "latency_ms": round(self._latency_ms(None), 3),
        }
