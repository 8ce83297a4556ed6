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

The model goes to a new folder under ``runs/`` unless ``--out`` names one; a
folder that already holds a model is replaced only with ``--overwrite``, so the
shipped ``models/lm-searcher-tiny`` is never overwritten by accident. Unless
``--samples`` is given, a stage curates what its minutes can train on
(``default_samples``), not the full recipe's 200,000. A model trained on fewer
than half the shipped recipe's draws is marked undertrained (``undertrained``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from finetune.curate import CurationOptions, curate, mix_weights, progress_lines
from finetune.domains import DEFAULT_DOMAINS, load_domain
from finetune.tiny_model import TinySize, new_tiny, save
from finetune.train_tiny import TrainOptions, train
from prompts.card import MODEL_CARD
from prompts.render import FORMATS, PER_CANDIDATE

# The shipped model's recipe (models/lm-searcher-tiny/lmsearcher.json, BENCHMARKS.md §4): 200,000 examples,
# then 3,524 optimizer steps of 8 draws in 30 minutes on one CPU thread that shared its core.
RECIPE_SAMPLES = 200_000
RECIPE_STEPS = 3524
RECIPE_BATCH = 8
RECIPE_DRAWS = RECIPE_STEPS * RECIPE_BATCH
# Steps a minute assumed when sizing the data: one thread on a free core (241-250 measured in 1-, 4- and 10-minute
# runs), so that such a run sees each example about once; a busier core repeats fewer, more threads repeat more
# (the recipe trained on its 200,000 1.4 times, a 10-minute run on 100,000 twice, both to the same quality).
STEPS_PER_MINUTE = 250
# Below half the recipe's draws a model is undertrained. Held-out pick quality (benchmarks/ranker_validity.py;
# the shipped model 0.914, random 0.5) of runs from scratch: 1 minute, 7 % of the draws, 0.823; 4 minutes, 27 %,
# 0.883; 10 minutes, 70 %, 0.911.
UNDERTRAINED_SHARE = 0.5
WARMUP_SAMPLES = 150_000  # the warm-up's former fixed count
MODEL_FILES = ("config.json", "model.safetensors", MODEL_CARD)


def stage_samples(specs: list[str], count: int, args: argparse.Namespace, seed: int, prune: bool) -> list[dict]:
    """A stage's curated examples, with progress on stderr (200,000 take minutes)."""
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
        slot_weighting=args.slot_weighting,
        generation_share=args.generation_share,
        search_share=args.search_share,
    )
    samples = curate(domains, count, seed, options, mix_weights(domains), progress_lines(count))
    print(f"curated {len(samples)} samples from {len(domains) - synthetic} table and {synthetic} synthetic domains "
          f"in {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    return samples


def default_out() -> Path:
    """A new folder under runs/ named by the time: a default that never replaces a model."""
    base = Path("runs") / time.strftime("lm-searcher-tiny-%Y%m%d-%H%M%S")
    out, again = base, 1
    while out.exists():
        out, again = base.with_name(f"{base.name}-{again}"), again + 1
    return out


class ModelExists(FileExistsError):
    """``--out`` holds a model and ``--overwrite`` was not given."""


def refuse_overwrite(out: Path, overwrite: bool) -> None:
    """Raise ModelExists when ``out`` holds a model and ``--overwrite`` was not given.

    A folder with only ``train_state.pt`` (a ``--checkpoint`` run that was stopped) is resumed, not refused.
    """
    found = [name for name in MODEL_FILES if (out / name).exists()]
    if found and not overwrite:
        raise ModelExists(
            f"{out} already holds a model ({', '.join(found)}); pass --overwrite to replace it, or name another --out"
        )


def default_samples(minutes: float, steps: int, batch_size: int, per_draw: int, cap: int) -> int:
    """Examples a stage of ``minutes`` (at most ``steps`` steps) can train on, at most ``cap``.

    Why: curating the recipe's 200,000 examples takes minutes of its own, wasted on a short run.
    """
    trainable = min(steps, math.ceil(minutes * STEPS_PER_MINUTE)) * batch_size * per_draw
    return max(batch_size * per_draw, min(cap, trainable))


def draws_of(card: dict) -> int:
    """Draws a model was trained on, its ``--init`` chain included (cards without ``batch_size``: the recipe's)."""
    own = card["steps"] * card.get("batch_size", RECIPE_BATCH)
    return own + (draws_of(card["previous"]) if card.get("previous") else 0)


def undertrained(card: dict) -> dict | None:
    """How little a card's model was trained, when below ``UNDERTRAINED_SHARE`` of the recipe's draws; else None."""
    draws = draws_of(card)
    if draws >= UNDERTRAINED_SHARE * RECIPE_DRAWS:
        return None
    return {"draws": draws, "recipe_draws": RECIPE_DRAWS, "share": round(draws / RECIPE_DRAWS, 4)}


def undertrained_warning(card: dict) -> str | None:
    """The warning printed after a run whose model is ``undertrained``."""
    if not card.get("undertrained"):
        return None
    shortfall, by_time = card["undertrained"], card["stopped_by"] == "time"
    stopped = f"the {card['minutes']:g}-minute time limit" if by_time else "--steps"
    return (
        f"warning: undertrained: {shortfall['draws']:,} draws in all ({card['steps']:,} steps here, stopped by "
        f"{stopped}), {shortfall['share']:.0%} of the shipped recipe's {RECIPE_DRAWS:,} ({RECIPE_STEPS:,} steps of "
        f"{RECIPE_BATCH}); this model will pick poorly (held-out pick quality 0.82 after 1 minute from scratch, "
        "0.88 after 4, 0.91 after 10; shipped 0.914). "
        + ("Give it more --minutes (10 on a free core)." if by_time else "Raise --steps.")
    )


def build(args: argparse.Namespace) -> dict:
    out = Path(args.out) if args.out else default_out()
    refuse_overwrite(out, args.overwrite)
    print(f"model folder: {out}", flush=True)
    per_draw = args.candidates if args.prompt_format in PER_CANDIDATE else 1
    count = args.samples
    if count is None:
        count = default_samples(args.minutes, args.steps, args.batch_size, per_draw, RECIPE_SAMPLES)
    samples = stage_samples(args.domains, count, args, args.seed, prune=not args.no_prune)
    previous = None
    if args.init:  # continue from an earlier model: its weights, tokenizer and size
        model, tokenizer = LlamaForCausalLM.from_pretrained(args.init), AutoTokenizer.from_pretrained(args.init)
        previous = json.loads((Path(args.init) / MODEL_CARD).read_text())
        size = TinySize(**previous["size"])
    else:
        size = TinySize(args.hidden, args.layers, args.heads, args.intermediate, args.max_positions)
        model, tokenizer = new_tiny(size)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "train_state.pt" if args.checkpoint else None

    def log(line: str) -> None:
        print(line, flush=True)

    warmup = None
    if not args.init and args.warmup_minutes > 0 and not (checkpoint and checkpoint.exists()):
        print("warm-up stage", flush=True)
        # Never pruned: a pruned space of one or two slots is mostly a single code.
        warmup_count = args.warmup_samples
        if warmup_count is None:
            warmup_count = default_samples(args.warmup_minutes, args.steps, args.batch_size, per_draw, WARMUP_SAMPLES)
        warmup_samples = stage_samples(args.warmup_domains, warmup_count, args, args.seed + 1, prune=False)
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
        "slot_weighting": args.slot_weighting,
        "trained_on": list(args.domains),
        "warmup": warmup and {"domains": list(args.warmup_domains), **warmup},
        "samples": len(samples),
        "pruning": not args.no_prune,
        "size": vars(size),
        "batch_size": args.batch_size,
        "minutes": args.minutes,
        **report,
        "stopped_by": "steps" if report["steps"] >= args.steps else "time",
        "peak_rss_mb": _peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "previous": previous,  # the --init model's own card: the whole training history, stage by stage
    }
    card["undertrained"] = undertrained(card) or False
    (out / MODEL_CARD).write_text(json.dumps(card, indent=2))
    return card


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune.build_tiny", description=__doc__)
    p.add_argument(
        "--out",
        help="model folder (default: a new runs/lm-searcher-tiny-YYYYmmdd-HHMMSS); one holding a model "
        "is refused unless --overwrite",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the model already in --out")
    p.add_argument("--data", help="folder of the training tables (default ../shared/data/train_domains)")
    p.add_argument("--domains", nargs="+", default=list(DEFAULT_DOMAINS))
    p.add_argument(
        "--samples",
        type=int,
        help="training examples of the main stage (default: what --minutes can train on, "
        f"at most the recipe's {RECIPE_SAMPLES:,})",
    )
    p.add_argument("--warmup-domains", nargs="+", default=["synthetic:400:1-2"])
    p.add_argument(
        "--warmup-samples",
        type=int,
        help=f"examples of the warm-up (default: what --warmup-minutes can train on, at most {WARMUP_SAMPLES:,})",
    )
    p.add_argument("--warmup-minutes", type=float, default=0.0, help="warm-up budget (0: no warm-up)")
    p.add_argument("--min-archs", type=int, default=14)
    p.add_argument("--max-archs", type=int, default=100)
    p.add_argument("--candidates", type=int, default=10)
    p.add_argument("--min-candidates", type=int, help="offer min..max candidates: pools of many sizes")
    p.add_argument("--history-cap", type=int, default=24, help="history items shown")
    p.add_argument("--prompt-format", choices=FORMATS, default="near")
    p.add_argument(
        "--slot-weighting", type=float, default=0.0,
        help="near format: how much distances weigh slots by what they explain of the history (0-1; 0: alike)",
    )  # fmt: skip
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
    import sys

    from finetune.cli import main

    sys.exit(main(["tiny", *sys.argv[1:]]))
