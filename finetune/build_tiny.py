"""Build LM-Searcher-tiny end to end: curate training data, train from scratch, save.

Half of the samples come from benchmark tables (NAS-Bench-Graph, NAS-Bench-Macro,
Channel-Bench-Macro, NASLib samples) and half from synthetic landscapes; never
from NAS-Bench-201. The model folder also gets ``lmsearcher.json``, the prompt
settings it was trained with, which the ranker uses as its defaults.

The default prompt format is ``choice`` (``prompts.choice``): one character per
code symbol naming its slot and option (and, in the history, the code's score;
in a candidate, its label), and an answer that grades every candidate
(``A7B3...``) instead of copying a code; the model starts from built code
embeddings and matching attention (``finetune.tiny_model``). BENCHMARKS.md §4
has what each form reached.
``--init`` continues from an earlier model folder (a curriculum stage).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from agent.llm_ranker import MODEL_CARD
from finetune.curate import CurationOptions, curate, mix_weights
from finetune.domains import DEFAULT_DOMAINS, load_domain
from finetune.tiny_model import TinySize, frozen_token_ids, new_tiny, save
from finetune.train_tiny import TrainOptions, train
from prompts.render import FORMATS


def build(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    domains = [d for spec in args.domains for d in load_domain(spec, args.data, args.seed)]
    synthetic = sum(d.codes is None for d in domains)
    real = len(domains) - synthetic
    options = CurationOptions(
        min_archs=args.min_archs,
        max_archs=args.max_archs,
        candidates=args.candidates,
        min_candidates=args.min_candidates,
        prune=not args.no_prune,
        prompt_format=args.prompt_format,
        history_cap=args.history_cap,
        generation_share=args.generation_share,
    )
    samples = curate(domains, args.samples, args.seed, options, mix_weights(domains))
    print(f"curated {len(samples)} samples from {real} table and {synthetic} synthetic domains "
          f"in {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    if args.init:  # continue from an earlier model: its weights, tokenizer and size
        model, tokenizer = LlamaForCausalLM.from_pretrained(args.init), AutoTokenizer.from_pretrained(args.init)
        size = TinySize(**json.loads((Path(args.init) / MODEL_CARD).read_text())["size"])
    else:
        size = TinySize(args.hidden, args.layers, args.heads, args.intermediate, args.max_positions)
        model, tokenizer = new_tiny(size)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = train(
        model,
        tokenizer,
        samples,
        TrainOptions(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            time_budget_s=args.minutes * 60,
            seed=args.seed,
            log_every=25,
        ),
        checkpoint=out / "train_state.pt" if args.checkpoint else None,
        log=lambda line: print(line, flush=True),
        frozen_rows=frozen_token_ids(tokenizer),
    )
    save(model, tokenizer, out)
    card = {
        "prompt_format": args.prompt_format,
        "generation_share": args.generation_share,
        "init": args.init,
        "history_cap": args.history_cap,
        "trained_on": list(args.domains),
        "samples": len(samples),
        "pruning": not args.no_prune,
        "size": vars(size),
        **report,
        "peak_rss_mb": _peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
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
    p.add_argument("--samples", type=int, default=40000)
    p.add_argument("--min-archs", type=int, default=14)
    p.add_argument("--max-archs", type=int, default=100)
    p.add_argument("--candidates", type=int, default=10)
    p.add_argument("--min-candidates", type=int, default=5, help="offer min..max candidates: pools of many sizes")
    p.add_argument("--history-cap", type=int, default=12, help="history items shown (best half, rest spread)")
    p.add_argument("--prompt-format", choices=FORMATS, default="choice")
    p.add_argument("--generation-share", type=float, default=0.15, help="share of generation samples")
    p.add_argument("--init", help="continue from this model folder (its size is kept)")
    p.add_argument("--no-prune", action="store_true", help="ablation: sample from the whole space")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=384)
    p.add_argument("--max-positions", type=int, default=2048)
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--minutes", type=float, default=46.0, help="wall-clock training budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", action="store_true", help="save resumable training state next to the model")
    return p


if __name__ == "__main__":
    print(json.dumps(build(parser().parse_args()), indent=2))
