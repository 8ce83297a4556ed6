"""How often a ranker model names an offered candidate, how often the best one, and how good its
pick is, on held-out prompts: draws of seed 123 from two training tables (NAS-Bench-Graph citeseer,
Channel-Bench-Macro) and from synthetic landscapes of seed 99, which no default training run uses.

    python benchmarks/ranker_validity.py --model PATH [--samples 200] [--search-share 1.0]

``--search-share 1.0`` asks about draws shaped like a search's history and pool instead
(``finetune.curate.search_draw``), which is what a ranker meets in a search.

"pick quality" is 1 - (rank of the pick among the candidates) / (candidates - 1): 1 for the
best, 0 for the worst, 0.5 expected from a random pick (and counted so for an invalid answer).
"reference" is the pick quality of a classical predictor given the same prompt; it shows how much
the prompt itself supports. For choice- and grade-format models it is additive: each candidate
scores the mean, over its slots, of the history scores of the shown codes that share that slot's
option. For near-format models it is the nearest codes' grades weighted ``exp(-2 * distance)``
(``prompts.near.reference_grade``). For grade- and near-format models, "expected grades" is the pick
quality when each candidate's grade is the mean of the model's digit distribution instead of its
greedy digit (logprobs, which vLLM returns and ``transformers serve`` does not). "grade loss" is the
model's mean cross-entropy (nats) on the training answer's grade digits, next to the entropy of
those digits' overall distribution: a model that reads nothing from the prompt can at best match the
entropy, so the gap is what it has learned.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import re
import statistics
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from agent.llm.ranker import parse_choice
from agent.strategies.rankers import additive_predictions
from finetune.curate import CurationOptions, curate
from finetune.domains import load_domain
from finetune.train_tiny import IGNORE, answer_start, encode_sample
from prompts import grade as grade_format
from prompts import near
from prompts.choice import parse_pick, untag
from prompts.render import PER_CANDIDATE

HELD_OUT = ("nbg:citeseer", "channel", "synthetic:20")


def additive_pick(history: list[tuple[str, int]], candidates: list[str]) -> str:
    """The candidate an additive per-slot model fitted to the prompt's (code, digit) history would pick
    (the first of equals)."""
    predicted = additive_predictions(history, candidates)
    return candidates[predicted.index(max(predicted))]


def quality(pick: str | None, codes: list[str], order: list[int]) -> float:
    return 1.0 - order.index(codes.index(pick)) / max(1, len(codes) - 1) if pick is not None else 0.5


def grade_losses(model, tokenizer, sample: dict) -> list[tuple[str, float]]:
    """(digit, cross-entropy) for each grade digit of the sample's training answer."""
    ids, labels = encode_sample(tokenizer, sample, tokenizer.model_max_length)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    losses = torch.nn.functional.cross_entropy(logits, torch.tensor(labels[1:]), reduction="none")
    tokens = tokenizer.convert_ids_to_tokens([label for label in labels[1:] if label != IGNORE])
    learned = [loss for loss, label in zip(losses.tolist(), labels[1:], strict=True) if label != IGNORE]
    return [(token, loss) for token, loss in zip(tokens, learned, strict=True) if token.isdigit()]


def entropy(counts: collections.Counter) -> float:
    total = sum(counts.values())
    return -sum(count / total * math.log(count / total) for count in counts.values())


def grade_table(model, tokenizer, domains, samples: list[dict], args: argparse.Namespace, cap: int) -> None:
    """The same columns for a ``grade``- or ``near``-format model: each draw's candidates are graded one prompt each
    (the greedy answer's digit, as the ranker reads it) and the highest grade is the pick."""
    by_name = {domain.name: domain for domain in domains}
    draws: dict[int, list[dict]] = collections.defaultdict(list)
    for sample in samples:
        draws[sample["group"]].append(sample)
    rng = random.Random(0)  # breaks ties between equal grades
    named = best = 0
    qualities, expected_qualities, reference, graded = [], [], [], []
    digit_ids = tokenizer.convert_tokens_to_ids([str(d) for d in range(10)])
    for rows in draws.values():
        domain = by_name[rows[0]["domain"]]
        codes = [row["candidates"][0] for row in rows]
        utilities = [domain.metric.utility(domain.score(code)) for code in codes]
        order = sorted(range(len(codes)), key=lambda i: -utilities[i])
        grades, expected, read = {}, {}, {}
        for code, row in zip(codes, rows, strict=True):
            ids, labels = encode_sample(tokenizer, row, tokenizer.model_max_length)
            start = answer_start(labels)
            with torch.no_grad():
                logits = model(torch.tensor([ids[:start]])).logits[0, -1]
            text = tokenizer.decode([int(logits.argmax())], skip_special_tokens=True)
            graded.append((row["answer"], float(torch.log_softmax(logits, -1)[labels[start]].neg())))
            expected[code] = float(torch.softmax(logits[digit_ids], -1) @ torch.arange(10.0))
            if symbols := near.unsymbol(row["messages"][0]["content"]):
                read[code] = near.reference_grade(symbols)
            if (grade := grade_format.parse_grade(text)) is not None:
                grades[code] = grade
        pick = grade_format.highest(grades, rng) if grades else None
        named += pick is not None
        best += pick == codes[order[0]]
        qualities.append(quality(pick, codes, order))
        expected_qualities.append(quality(max(codes, key=expected.__getitem__), codes, order))
        if read:  # near format
            reference.append(quality(max(codes, key=read.__getitem__), codes, order))
        else:
            history = grade_format.unscored(rows[0]["messages"][0]["content"])
            reference.append(quality(additive_pick(history, codes), codes, order))
    print_table(args.model, len(draws), args.candidates, cap, named, best, qualities, reference, graded)
    print(f"\npick quality from expected grades (what a server returning logprobs would allow): "
          f"{statistics.mean(expected_qualities):.3f}")  # fmt: skip


def print_table(model, prompts, candidates, cap, named, best, qualities, reference, graded) -> None:
    print("| model | prompts | candidates | history | names a candidate | names the best | pick quality "
          "| reference | grade loss (entropy) |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    rates = f"{named / prompts:.2f} | {best / prompts:.2f} | {statistics.mean(qualities):.3f}"
    additive = f"{statistics.mean(reference):.3f}" if reference else "-"
    loss = statistics.mean(loss for _, loss in graded) if graded else None
    digits = f"{loss:.3f} ({entropy(collections.Counter(d for d, _ in graded)):.3f})" if graded else "-"
    print(f"| {model} | {prompts} | {candidates} | {cap} | {rates} | {additive} | {digits} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=10, help="candidates per prompt (1: a pure copy test)")
    parser.add_argument("--history-cap", type=int, help="history items per prompt (default: the model's own)")
    parser.add_argument("--domains", nargs="+", default=list(HELD_OUT))
    parser.add_argument("--search-share", type=float, default=0.0, help="share of search-shaped draws")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(args.model), AutoTokenizer.from_pretrained(args.model)
    card = json.loads((args.model / "lmsearcher.json").read_text()) if (args.model / "lmsearcher.json").exists() else {}
    fmt = card.get("prompt_format", "compact")
    domains = [d for spec in args.domains for d in load_domain(spec, seed=99)]
    cap = args.history_cap or card.get("history_cap", 20)
    options = CurationOptions(
        min_archs=args.candidates + 4,
        max_archs=args.candidates + 100,
        candidates=args.candidates,
        history_cap=cap,
        prompt_format=fmt,
        search_share=args.search_share,
    )
    if fmt in PER_CANDIDATE:
        grade_table(model, tokenizer, domains, curate(domains, args.samples * args.candidates, 123, options), args, cap)
        return
    samples = curate(domains, args.samples, 123, options)
    named = best = 0
    qualities: list[float] = []
    reference: list[float] = []
    graded: list[tuple[str, float]] = []
    rng = random.Random(0)  # breaks ties between equal grades
    for sample in samples:
        prompt = tokenizer.apply_chat_template(sample["messages"], add_generation_prompt=True, tokenize=False)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        output = model.generate(
            **inputs, max_new_tokens=2 * args.candidates + 2 if fmt == "choice" else 60, do_sample=False
        )
        answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        codes, order = sample["candidates"], sample["ranking"]  # order: candidate indices, best first
        choice = parse_pick(answer, codes, rng) if fmt == "choice" else parse_choice(answer, codes)
        named += choice is not None
        best += choice == codes[order[0]]
        qualities.append(quality(choice, codes, order))
        if fmt == "choice":
            content = sample["messages"][0]["content"]
            history = [(untag(code), int(score)) for score, code in re.findall(r"([0-9]):([^,]+),", content)]
            reference.append(quality(additive_pick(history, codes), codes, order))
            graded.extend(grade_losses(model, tokenizer, sample))
    print_table(args.model, len(samples), args.candidates, cap, named, best, qualities, reference, graded)


if __name__ == "__main__":
    main()
