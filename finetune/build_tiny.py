"""Build LM-Searcher-tiny end to end: curate training data, train from scratch, save.

Half of the samples come from benchmark tables (NAS-Bench-Graph, NAS-Bench-Macro,
Channel-Bench-Macro, NASLib samples) and half from synthetic landscapes; never
from NAS-Bench-201. The model folder also gets ``lmsearcher.json``, the prompt
settings it was trained with, which the ranker uses as its defaults.

The default prompt format is ``near`` (``prompts.near``): one candidate per
prompt, its nearest history codes as (distance, grade) symbols, the answer one
digit. A model trained from scratch here learns to weigh those in 35 CPU minutes
(pick quality 0.90 on held-out prompts), where on the ``grade`` format, which
leaves the matching of symbols to the model, it reached 0.59 in an hour
(BENCHMARKS.md §4 has what each form reached). A draw's candidates are trained
as one packed sequence (``train_tiny.pack``).

``--warmup-minutes`` adds a first stage on synthetic landscapes of 1-2 slots,
which the ``grade`` format needed (there one or two symbols decide a code's
score, and the model finds the symbol lookup it does not find on many slots);
``near`` needs none. ``--init`` continues from an earlier model folder instead.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from finetune.curate import CurationOptions, curate, mix_weights
from finetune.domains import DEFAULT_DOMAINS, load_domain
from finetune.tiny_model import TinySize, new_tiny, save
from finetune.train_tiny import TrainOptions, train
from prompts.card import MODEL_CARD
from prompts.render import FORMATS


def stage_samples(specs: list[str], count: int, args: argparse.Namespace, seed: int, prune: bool) -> list[dict]:
    started = time.perf_counter()
    domains = [d for spec in specs for d in load_domain(spec, args.data, args.seed)]
    synthetic = sum(d.codes is None for d in domains)
    options = CurationOptions(
        min_archs=args.min_archs,
        max_archs=args.max_archs,
        candidates=args.candidates,
        min_candidates=args.min_candidates,
        prune=prune,
        prompt_format=args.prompt_format,
        history_cap=args.history_cap,
        generation_share=args.generation_share,
        search_share=args.search_share,
    )
    samples = curate(domains, count, seed, options, mix_weights(domains))
    print(f"curated {len(samples)} samples from {len(domains) - synthetic} table and {synthetic} synthetic domains "
          f"in {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    return samples


def build(args: argparse.Namespace) -> dict:
    samples = stage_samples(args.domains, args.samples, args, args.seed, prune=not args.no_prune)
    previous = None
    if args.init:  # continue from an earlier model: its weights, tokenizer and size
        model, tokenizer = LlamaForCausalLM.from_pretrained(args.init), AutoTokenizer.from_pretrained(args.init)
        previous = json.loads((Path(args.init) / MODEL_CARD).read_text())
        size = TinySize(**previous["size"])
    else:
        size = TinySize(args.hidden, args.layers, args.heads, args.intermediate, args.max_positions)
        model, tokenizer = new_tiny(size)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "train_state.pt" if args.checkpoint else None

    def log(line: str) -> None:
        print(line, flush=True)

    warmup = None
    if not args.init and args.warmup_minutes > 0 and not (checkpoint and checkpoint.exists()):
        print("warm-up stage", flush=True)
        # Never pruned: a pruned space of one or two slots is mostly a single code.
        warmup_samples = stage_samples(args.warmup_domains, args.warmup_samples, args, args.seed + 1, prune=False)
        options = TrainOptions(args.steps, args.batch_size, args.lr, time_budget_s=args.warmup_minutes * 60)
        warmup = train(model, tokenizer, warmup_samples, replace(options, seed=args.seed, log_every=25), log=log)
        print("main stage", flush=True)
    options = TrainOptions(args.steps, args.batch_size, args.lr, time_budget_s=args.minutes * 60)
    report = train(model, tokenizer, samples, replace(options, seed=args.seed, log_every=25), checkpoint, log)
    save(model, tokenizer, out)
    card = {
        "prompt_format": args.prompt_format,
        "generation_share": args.generation_share,
        "search_share": args.search_share,
        "init": args.init,
        "history_cap": args.history_cap,
        "trained_on": list(args.domains),
        "warmup": warmup and {"domains": list(args.warmup_domains), **warmup},
        "samples": len(samples),
        "pruning": not args.no_prune,
        "size": vars(size),
        **report,
        "peak_rss_mb": _peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "previous": previous,  # the --init model's own card: the whole training history, stage by stage
    }
    (out / MODEL_CARD).write_text(json.dumps(card, indent=2))
    return card


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune.build_tiny", description=__doc__)
    p.add_argument("--out", default="models/lm-searcher-tiny")
    p.add_argument("--data", help="folder of the training tables (default ../shared/data/train_domains)")
    p.add_argument("--domains", nargs="+", default=list(DEFAULT_DOMAINS))
    p.add_argument("--samples", type=int, default=200000, help="training examples of the main stage")
    p.add_argument("--warmup-domains", nargs="+", default=["synthetic:400:1-2"])
    p.add_argument("--warmup-samples", type=int, default=150000)
    p.add_argument("--warmup-minutes", type=float, default=0.0, help="warm-up budget (0: no warm-up)")
    p.add_argument("--min-archs", type=int, default=14)
    p.add_argument("--max-archs", type=int, default=100)
    p.add_argument("--candidates", type=int, default=10)
    p.add_argument("--min-candidates", type=int, help="offer min..max candidates: pools of many sizes")
    p.add_argument("--history-cap", type=int, default=24, help="history items shown")
    p.add_argument("--prompt-format", choices=FORMATS, default="near")
    p.add_argument("--generation-share", type=float, default=0.02, help="share of draws asking for a new code")
    p.add_argument(
        "--search-share", type=float, default=0.5, help="share of draws shaped like a search (curate.search_draw)"
    )
    p.add_argument("--init", help="continue from this model folder (its size is kept)")
    p.add_argument("--no-prune", action="store_true", help="ablation: sample from the whole space")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--max-positions", type=int, default=2048)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=8, help="draws per batch (a grade draw packs its candidates)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--minutes", type=float, default=35.0, help="wall-clock budget of the main stage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", action="store_true", help="save resumable training state next to the model")
    return p


if __name__ == "__main__":
    print(json.dumps(build(parser().parse_args()), indent=2))
