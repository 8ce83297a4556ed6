"""How often a ranker model names an offered candidate, and how often the best one, on held-out
prompts (domains and seeds not used by ``finetune tiny``'s defaults).

    python benchmarks/ranker_validity.py --model PATH [--samples 40]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from agent.llm_ranker import parse_choice
from finetune.curate import CurationOptions, curate
from finetune.domains import load_domain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--candidates", type=int, default=10, help="candidates per prompt (1: a pure copy test)")
    parser.add_argument("--history-cap", type=int, help="history items per prompt (default: the model's own)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(args.model), AutoTokenizer.from_pretrained(args.model)
    card = json.loads((args.model / "lmsearcher.json").read_text()) if (args.model / "lmsearcher.json").exists() else {}
    domains = [d for spec in ("nbg:citeseer", "channel", "synthetic:20") for d in load_domain(spec, seed=99)]
    cap = args.history_cap or card.get("history_cap", 20)
    options = CurationOptions(
        min_archs=args.candidates + 4, max_archs=args.candidates + 35, candidates=args.candidates, history_cap=cap
    )
    samples = curate(domains, args.samples, 123, options)
    named = best = 0
    for sample in samples:
        prompt = tokenizer.apply_chat_template(sample["messages"], add_generation_prompt=True, tokenize=False)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
        answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        candidates = re.findall(r"([0-9A-Za-z]+);", sample["messages"][0]["content"].split("Candidates:")[1])
        choice = parse_choice(answer, candidates)
        named += choice is not None
        best += choice == sample["answer"]
    print("| model | prompts | candidates | history | names a candidate | names the best |")
    print("|---|---|---|---|---|---|")
    rates = f"{named / len(samples):.2f} | {best / len(samples):.2f}"
    print(f"| {args.model} | {len(samples)} | {args.candidates} | {cap} | {rates} |")


if __name__ == "__main__":
    main()
