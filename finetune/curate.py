"""Ranking trajectories for training, built the paper's way: pruning-based subspace sampling.

One sample: prune the domain's space into a subspace (each slot frozen with
p=0.5, each option of a free slot dropped with p=0.5), draw 100-200 distinct
architectures from it, show all but ``candidates`` of them with their scores as
history, and label the best of the remaining candidates. ``prune=False`` is the
paper's ablation (sample from the whole space). Prompts come from
``prompts.render``, the same code the ranker uses at inference. In the
``choice`` format the answer grades every candidate's label by its place among
the candidates, 0-9; in the ``grade`` format each candidate is its own example,
answered with its score on the shown history's 0-9 scale. With
``generation_share`` > 0 that share of draws asks instead for a new code (the
best held-out one), so one model also serves the generation ablation.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prompts import choice, grade, near
from prompts.render import PER_CANDIDATE, TAGGED, grade_history, render, render_each, render_generation
from tools.evaluator import Metric
from tools.ncode import InvalidNCode, SearchSpace, mutate, prune, sample, to_indices

SEARCH_UNIVERSE = 3000  # table rows a search-shaped draw moves among (its neighbours are found there)
TEMPLATE_ALLOWANCE = 64  # tokens a chat template adds to the turns: BOS, role headers, end tokens, a default system
UTF8_BYTES = "utf8-bytes"  # the length proxy without a tokenizer


@dataclass(frozen=True)
class Domain:
    """A space whose codes can be scored without training: a table or a synthetic landscape."""

    name: str
    space: SearchSpace
    metric: Metric
    score: Callable[[str], float | None]
    codes: tuple[str, ...] | None = None  # the finite set of scored codes, for tables


@dataclass(frozen=True)
class CurationOptions:
    min_archs: int = 100
    max_archs: int = 200
    candidates: int = 10
    min_candidates: int | None = None  # curriculum: draw the count from [min_candidates, candidates]
    prune: bool = True
    prompt_format: str = "compact"
    history_cap: int = 200
    slot_weighting: float = 0.0  # the near format's distances (prompts.near.slot_weights), written to the card
    generation_share: float = 0.0  # share of generation samples (answer: the best held-out code)
    search_share: float = 0.0  # share of draws shaped like a search's history and pool (per-candidate formats)


# Option indices of every code of a table domain (one row per code, in ``Domain.codes`` order),
# built once per codes tuple; the tuple is kept in the value so that its id is never reused.
_INDEX_MATRICES: dict[int, tuple[tuple[str, ...], np.ndarray]] = {}


def index_matrix(domain: Domain) -> np.ndarray:
    """``codes x slots`` option indices of a table domain, cached."""
    assert domain.codes is not None
    cached = _INDEX_MATRICES.get(id(domain.codes))
    if cached is None or cached[0] is not domain.codes:
        rows = [to_indices(domain.space, code) for code in domain.codes]
        matrix = np.array(rows, dtype=np.int8).reshape(len(rows), domain.space.length)
        cached = _INDEX_MATRICES[id(domain.codes)] = (domain.codes, matrix)
    return cached[1]


def subspace_pool(domain: Domain, space: SearchSpace) -> Sequence[str]:
    """The domain's codes that lie in ``space``, in ``Domain.codes`` order (a vectorised filter)."""
    assert domain.codes is not None
    if space.allowed is None:
        return domain.codes
    matrix = index_matrix(domain)
    mask = np.ones(len(domain.codes), dtype=bool)
    for slot, allowed in enumerate(space.allowed):
        table = np.zeros(len(space.slots[slot].options), dtype=bool)
        table[list(allowed)] = True
        mask &= table[matrix[:, slot]]
    return [domain.codes[i] for i in np.flatnonzero(mask)]


def draw_architectures(domain: Domain, space: SearchSpace, n: int, rng: random.Random) -> list[str]:
    """``n`` scored codes of ``space`` (a pruned copy of the domain's space), distinct where it can.

    A table gives at most its rows. A landscape's space smaller than ``n`` codes is
    drawn with repeats, as when an architecture is evaluated again; with one or two
    slots that is what lets a candidate's symbols be found in the history at all.
    """
    if domain.codes is not None:
        pool = subspace_pool(domain, space)
        return rng.sample(pool, min(n, len(pool)))
    if space.size() < n:
        try:
            return [sample(space, rng, max_tries=50) for _ in range(n)]
        except InvalidNCode:
            return []  # the pruned subspace holds no valid code
    found: dict[str, None] = {}
    for _ in range(20 * n):
        if len(found) == n:
            break
        try:
            found.setdefault(sample(space, rng, max_tries=50))
        except InvalidNCode:
            break  # the pruned subspace holds no valid code
    return list(found)


def search_draw(domain: Domain, n: int, candidates: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """A history of ``n`` codes and a pool of ``candidates`` as a search with the ``mixed`` pool leaves them.

    Why: i.i.d. draws teach how a code compares with codes like it; a search's history is
    crowded with good codes and its pool half neighbours of the best, and a ranker trained on
    i.i.d. draws alone over-grades those neighbours. After a random start, each history code is,
    with probability ``greed`` (drawn per draw), a one-slot neighbour of one of the 10 best so
    far, else a random code; the pool is half random, half such neighbours, none in the history.
    A table's neighbours are its nearest rows among ``SEARCH_UNIVERSE`` drawn at random.
    """
    utility = domain.metric.utility
    if domain.codes is not None:
        rows = rng.sample(range(len(domain.codes)), min(SEARCH_UNIVERSE, len(domain.codes)))
        matrix = index_matrix(domain)[rows]
        where = {domain.codes[row]: i for i, row in enumerate(rows)}

        def random_code() -> str:
            return domain.codes[rng.choice(rows)]

        def neighbour(code: str) -> str:
            gaps = np.count_nonzero(matrix != matrix[where[code]], axis=1)
            gaps[gaps == 0] = 1 + domain.space.length
            return domain.codes[rows[rng.choice(np.flatnonzero(gaps == gaps.min()).tolist())]]
    else:

        def random_code() -> str:
            return sample(domain.space, rng, max_tries=50)

        def neighbour(code: str) -> str:
            return mutate(domain.space, code, rng)

    greed, start = rng.uniform(0.5, 1.0), rng.randint(5, 20)
    history: list[tuple[float, str]] = []  # (utility, code), best first
    seen: set[str] = set()

    def fresh(local: bool) -> str | None:
        """An unseen scored code: a neighbour of one of the 10 best, or a random one."""
        for _ in range(20):
            code = neighbour(rng.choice(history[:10])[1]) if local and history else random_code()
            if code not in seen and domain.score(code) is not None:
                seen.add(code)
                return code
        return None

    for _ in range(2 * n):
        if len(history) == n:
            break
        if (code := fresh(len(history) >= start and rng.random() < greed)) is not None:
            history.append((utility(domain.score(code)), code))
            history.sort(key=lambda pair: -pair[0])
    pool = [code for index in range(2 * candidates) if (code := fresh(index % 2 == 1)) is not None]
    return [code for _, code in history], pool[:candidates]


def sampled_draw(
    domain: Domain, rng: random.Random, options: CurationOptions
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The paper's draw: scored codes of a pruned subspace (the whole space with ``prune=False``),
    split into history and candidates; no candidates when the subspace is too small."""
    space = prune(domain.space, rng) if options.prune else domain.space
    wanted = rng.randint(options.min_archs, options.max_archs)
    codes = draw_architectures(domain, space, wanted, rng)
    if len(codes) < options.candidates + 2 and domain.codes is not None:
        codes = draw_architectures(domain, domain.space, wanted, rng)
    scored = [(code, score) for code in codes if (score := domain.score(code)) is not None]
    if len(scored) < options.candidates + 2:
        return scored, []
    shown = (
        options.candidates
        if options.min_candidates is None
        else rng.randint(options.min_candidates, options.candidates)
    )
    return scored[:-shown], scored[-shown:]


def make_samples(domain: Domain, rng: random.Random, options: CurationOptions) -> list[dict]:
    """The training examples of one draw (one history), or none when the drawn subspace is too small.

    One example in the ``paper``, ``compact`` and ``choice`` formats; in the
    ``grade`` format one per candidate, sharing the draw's ``group`` number.
    A small table (hundreds of rows) rarely has enough rows in a pruned subspace;
    it is then sampled whole, so that it still contributes examples.
    """
    if options.search_share > 0 and rng.random() < options.search_share:
        past, pool = search_draw(domain, rng.randint(options.min_archs, options.max_archs), options.candidates, rng)
        if len(past) < 2 or len(pool) < 2:
            return []
        history = [(code, domain.score(code)) for code in past]
        candidates = [(code, domain.score(code)) for code in pool]
    else:
        history, candidates = sampled_draw(domain, rng, options)
        if not candidates:
            return []
    codes = [code for code, _ in candidates]
    utilities = [domain.metric.utility(score) for _, score in candidates]
    ranking = sorted(range(len(codes)), key=lambda i: -utilities[i])  # candidate indices, best first
    best = codes[ranking[0]]
    space, metric, cap, fmt = domain.space, domain.metric, options.history_cap, options.prompt_format
    common = {"domain": domain.name, "history": len(history)}
    held_out = {"candidates": codes, "ranking": ranking}  # kept for evaluation (ranker_validity), not exported
    if options.generation_share > 0 and rng.random() < options.generation_share:
        messages = render_generation(fmt, space.name, space.length, metric, history, cap)
        answer = choice.tag(best) if fmt in TAGGED else best
        return [{"messages": messages, "answer": answer, "task": "generate", **common, **held_out}]
    if fmt in PER_CANDIDATE:
        prompts = render_each(fmt, space.length, metric, history, codes, cap, options.slot_weighting)
        return [
            {
                "messages": messages,
                "answer": per_candidate_answer(fmt, utility, history, metric, cap),
                "task": "grade",
                **common,
                "candidates": [code],
                "ranking": [0],
            }
            for code, utility, messages in zip(codes, utilities, prompts, strict=True)
        ]
    messages = render(fmt, space.name, space.length, metric, history, codes, cap)
    answer = choice.answer(utilities) if fmt == "choice" else best
    return [
        {
            "messages": messages,
            "answer": answer,
            "task": "rank",
            **common,
            **held_out,
        }
    ]


def per_candidate_answer(
    fmt: str, utility: float, history: Sequence[tuple[str, float]], metric: Metric, cap: int
) -> str:
    """A ``PER_CANDIDATE`` candidate's training grade, on the scale its prompt shows."""
    if fmt == "near":
        return near.answer(utility, [metric.utility(score) for _, score in history])
    return grade.answer(utility, [value for _, value in grade_history(history, metric, cap)])


def curate(
    domains: Sequence[Domain],
    n_samples: int,
    seed: int,
    options: CurationOptions,
    weights: Sequence[float] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """``n_samples`` examples, each draw from a domain drawn at random (by ``weights``); deterministic by seed.

    Every example carries ``group``, the number of its draw: the examples of one
    draw (the ``grade`` format's candidates) share a history and are trained together.
    ``progress`` is told the count after every draw (curating many samples takes minutes).
    """
    rng = random.Random(seed)
    samples: list[dict] = []
    draws = misses = 0
    while len(samples) < n_samples:
        made = make_samples(rng.choices(list(domains), weights)[0], rng, options)
        if not made:
            misses += 1
            if misses > 50 * n_samples + 100:
                raise ValueError("the domains are too small for these curation options; lower --min-archs")
            continue
        samples.extend({**sample, "group": draws} for sample in made)
        draws += 1
        if progress is not None:
            progress(min(len(samples), n_samples))
    return samples[:n_samples]


def progress_lines(total: int) -> Callable[[int], None]:
    """A ``curate`` progress callback: "curated N / M samples" on stderr at each tenth of ``total``.

    Lines, not a live bar: they read the same in a terminal and in a log file.
    """
    started, shown = time.perf_counter(), 0  # shown: tenths reported so far

    def report(done: int) -> None:
        nonlocal shown
        if done * 10 // total > shown:
            shown = done * 10 // total
            seconds = time.perf_counter() - started
            left = f", about {seconds * (total - done) / done:.0f} s left" if done < total else ""
            print(f"curated {done} / {total} samples ({seconds:.0f} s{left})", file=sys.stderr, flush=True)

    return report


def mix_weights(domains: Sequence[Domain], synthetic_share: float = 0.5) -> list[float] | None:
    """Domain weights giving synthetic landscapes ``synthetic_share`` of the samples and tables the rest,
    split evenly within each group; None (uniform over domains) when only one group is present."""
    synthetic = sum(domain.codes is None for domain in domains)
    tables = len(domains) - synthetic
    if not synthetic or not tables:
        return None
    return [synthetic_share / synthetic if d.codes is None else (1 - synthetic_share) / tables for d in domains]


def sequence_lengths(samples: Sequence[dict], tokenizer: Any = None, chunk: int = 500) -> list[int]:
    """Tokens of each example's prompt turns and answer, without the chat template's own tokens.

    Without ``tokenizer``: their UTF-8 bytes, which a byte-level BPE tokenizer (Llama 3, Qwen, GPT)
    never exceeds. Characters/4 would be no bound: these digit-heavy prompts take 1-2.3 bytes a token
    (Qwen writes each digit as a token), so it undercounts them 2-4 times. Tokenized ``chunk`` samples
    at a time, so that 20,000 long prompts never hold all their token ids at once.
    """
    texts = [[m["content"] for m in sample["messages"]] + [sample["answer"]] for sample in samples]
    if tokenizer is None:
        return [sum(len(text.encode()) for text in parts) for parts in texts]
    lengths = []
    for start in range(0, len(texts), chunk):
        batch = texts[start : start + chunk]
        ids = iter(tokenizer([text for parts in batch for text in parts], add_special_tokens=False)["input_ids"])
        lengths.extend(sum(len(next(ids)) for _ in parts) for parts in batch)
    return lengths


def percentile(ordered: Sequence[int], share: float) -> int:
    """The nearest-rank percentile of sorted values (a length that occurs, not an interpolation)."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def length_report(lengths: Sequence[int], counted_by: str, limit: int) -> dict[str, Any]:
    """Median, p95 and max of ``sequence_lengths``; how many would not fit in ``limit`` tokens with the
    template's allowance; and the ``cutoff_len`` that fits them all (rounded up to a multiple of 128).

    Why: LLaMA-Factory cuts a too-long example's prompt at its end, dropping the candidates and the
    instruction, and says nothing; ``finetune train`` drops such examples (``--max-length``).
    """
    ordered = sorted(lengths)
    return {
        "counted_by": counted_by,
        "examples": len(ordered),
        "median": percentile(ordered, 0.5),
        "p95": percentile(ordered, 0.95),
        "max": ordered[-1],
        "limit": limit,
        "over_limit": sum(length + TEMPLATE_ALLOWANCE > limit for length in ordered),
        "cutoff_len": math.ceil((ordered[-1] + TEMPLATE_ALLOWANCE) / 128) * 128,
    }


def length_warning(report: dict[str, Any], prompt_format: str) -> str | None:
    """One line when some examples would not fit in ``report['limit']`` tokens, naming the settings that fit."""
    if not report["over_limit"]:
        return None
    cutoff = report["cutoff_len"]
    return (
        f"warning: {report['over_limit']} of {report['examples']} examples need more than {report['limit']} tokens "
        f"({report['counted_by']}; longest {report['max']} + {TEMPLATE_ALLOWANCE} for the chat template): "
        f"LLaMA-Factory silently cuts the end of their prompts (candidates, instruction); for this "
        f"{prompt_format} curation set its cutoff_len: {cutoff} (finetune train keeps them with --max-length >= "
        f"{cutoff}) or lower --history-cap"
    )
