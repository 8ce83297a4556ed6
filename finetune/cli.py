"""``python main.py finetune curate|train|tiny``: ranker training data and ranker training.

- ``curate``: ranking samples from the training domains (never NAS-Bench-201), written as a
  Hugging Face dataset, LLaMA-Factory files and a summary (see ``finetune.export``);
- ``train``: SFT of a Hugging Face causal LM on that dataset with TRL and LoRA or a full
  fine-tune (see ``finetune.sft``);
- ``tiny``: build LM-Searcher-tiny from scratch (``finetune.build_tiny``'s flags), by default
  into a new folder under runs/.

Bad input (an NB201 or unknown domain, a missing table folder, dataset or model, a ``tiny
--out`` that already holds a model without ``--overwrite``) prints one line and returns 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from finetune.domains import DEFAULT_DOMAINS, DomainError, refuse_forbidden
from finetune.export import DEFAULT_NAME
from prompts.choice import LABELS
from prompts.render import DEFAULT_HISTORY_CAP, FORMATS
from tools.extras import missing_extra

EXIT_BAD_INPUT = 2
SUBCOMMANDS = ("curate", "train", "tiny")
FINETUNE_MODULES = ("datasets", "peft", "trl")  # the 'finetune' extra (pyproject.toml)


class FinetuneUsageError(ValueError):
    """Bad command-line input for the finetune commands."""


def curate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python main.py finetune curate",
        description="Curate ranking samples (pruning-based subspace sampling) from training domains; "
        "writes OUT/hf_dataset, OUT/llamafactory/ and OUT/summary.json.",
    )
    p.add_argument("--domains", nargs="+", default=list(DEFAULT_DOMAINS),
                   help="nbg[:DATASET], macro, channel, nb101, nb301, tb101[:TASK], synthetic:N "
                   f"(default: {' '.join(DEFAULT_DOMAINS)}); NAS-Bench-201 is refused")  # fmt: skip
    p.add_argument("--samples", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-prune", action="store_true", help="ablation: draw from the whole space, no pruning")
    p.add_argument("--min-archs", type=int, default=100, help="fewest architectures per sample (default 100)")
    p.add_argument("--max-archs", type=int, default=200, help="most architectures per sample (default 200)")
    p.add_argument("--candidates", type=int, default=10, help="candidates per sample (default 10)")
    p.add_argument("--prompt-format", choices=FORMATS, default="compact")
    p.add_argument("--history-cap", type=int, default=DEFAULT_HISTORY_CAP, help="history items in the prompt")
    p.add_argument("--data", help="folder of the training tables (default ../shared/data/train_domains)")
    p.add_argument(
        "--synthetic-share", type=float, default=0.5, help="share of samples from synthetic landscapes (default 0.5)"
    )
    p.add_argument(
        "--generation-share", type=float, default=0.0, help="share of generation samples (ablation data; default 0)"
    )
    p.add_argument(
        "--search-share",
        type=float,
        default=0.0,
        help="share of draws shaped like a search's history and mixed pool (finetune tiny: 0.5; default 0, the paper)",
    )
    p.add_argument("--name", default=DEFAULT_NAME, help="dataset name in LLaMA-Factory's dataset_info.json")
    p.add_argument(
        "--tokenizer",
        help="tokenizer folder (or Hub id) to count prompt tokens with (default: UTF-8 bytes, an upper bound for "
        "byte-level BPE tokenizers such as Llama 3's and Qwen's)",
    )
    p.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=2048,
        help="warn when examples need more tokens than this (default 2048, LLaMA-Factory's default cutoff_len)",
    )
    return p


def load_tokenizer(path: str):
    """A Hugging Face tokenizer for counting prompt tokens; bad input is one line."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise FinetuneUsageError(f"cannot load tokenizer {path!r}: {str(error).splitlines()[0]}") from None


def run_curate(argv: list[str]) -> int:
    from datasets.utils.logging import disable_progress_bar

    from finetune.curate import (
        UTF8_BYTES,
        CurationOptions,
        curate,
        length_report,
        length_warning,
        mix_weights,
        progress_lines,
        sequence_lengths,
    )
    from finetune.domains import load_domain
    from finetune.export import export, summary_lines

    disable_progress_bar()  # the datasets library's bar for a save that takes a moment
    args = curate_parser().parse_args(argv)
    if args.samples < 1 or args.candidates < 1 or args.history_cap < 1:
        raise FinetuneUsageError("--samples, --candidates and --history-cap must be at least 1")
    if not 1 <= args.min_archs <= args.max_archs:
        raise FinetuneUsageError("need 1 <= --min-archs <= --max-archs")
    if not all(0.0 <= share <= 1.0 for share in (args.synthetic_share, args.generation_share, args.search_share)):
        raise FinetuneUsageError("--synthetic-share, --generation-share and --search-share must lie in [0, 1]")
    if args.max_prompt_tokens < 1:
        raise FinetuneUsageError("--max-prompt-tokens must be at least 1")
    if args.prompt_format == "choice" and args.candidates > len(LABELS):
        raise FinetuneUsageError(f"the choice format labels at most {len(LABELS)} candidates; lower --candidates")
    for spec in args.domains:
        refuse_forbidden(spec)
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None  # fail fast, before curating
    started = time.perf_counter()
    domains = [domain for spec in args.domains for domain in load_domain(spec, args.data, args.seed)]
    if not domains:
        raise FinetuneUsageError(f"the domains {' '.join(args.domains)} hold no data")
    options = CurationOptions(
        min_archs=args.min_archs,
        max_archs=args.max_archs,
        candidates=args.candidates,
        prune=not args.no_prune,
        prompt_format=args.prompt_format,
        history_cap=args.history_cap,
        generation_share=args.generation_share,
        search_share=args.search_share,
    )
    try:
        weights = mix_weights(domains, args.synthetic_share)
        samples = curate(domains, args.samples, args.seed, options, weights, progress_lines(args.samples))
    except ValueError as error:
        raise FinetuneUsageError(str(error)) from None
    lengths = length_report(sequence_lengths(samples, tokenizer), args.tokenizer or UTF8_BYTES, args.max_prompt_tokens)
    summary = export(
        samples,
        Path(args.out),
        args.name,
        seed=args.seed,
        pruning=options.prune,
        prompt_format=options.prompt_format,
        history_cap=options.history_cap,
        min_archs=options.min_archs,
        max_archs=options.max_archs,
        candidates=options.candidates,
        synthetic_share=args.synthetic_share,
        generation_share=args.generation_share,
        search_share=args.search_share,
        prompt_tokens=lengths,
        domain_specs=list(args.domains),
        seconds=round(time.perf_counter() - started, 2),
    )
    for line in summary_lines(summary):
        print(line)
    entries = ", ".join(f"{name}.json" for name in summary["files"]["llamafactory"])
    print(f"wrote {args.out}: hf_dataset/, llamafactory/ ({entries} + dataset_info.json), summary.json")
    if warning := length_warning(lengths, options.prompt_format):
        print(warning, file=sys.stderr)  # after the summary, so that it is not scrolled away
    return 0


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python main.py finetune train",
        description="SFT of a Hugging Face causal LM on curated samples (TRL; LoRA by default; loss on the answer "
        "only). Defaults are the paper's: lr 1e-5, warm-up ratio 0.1, 1 epoch, batch 8, gradient accumulation 2.",
    )
    p.add_argument("--dataset", required=True, help="a curation folder (finetune curate --out) or its hf_dataset/")
    p.add_argument("--model", required=True, help="local model folder or Hugging Face Hub id")
    p.add_argument("--out", required=True, help="output folder: checkpoints/ and model/ (or adapter/)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--lora", dest="lora", action="store_true", default=True, help="LoRA fine-tune (default)")
    kind.add_argument("--full", dest="lora", action="store_false", help="full fine-tune")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=8, help="per device")
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--scheduler", default="cosine", help="learning-rate schedule after warm-up (default cosine)")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (default: epochs)")
    p.add_argument("--save-steps", type=int, default=500, help="checkpoint every N optimizer steps")
    p.add_argument("--max-length", type=int, default=4096, help="longer examples are dropped, never truncated")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--merge", action="store_true", help="merge LoRA into the base: OUT/model instead of OUT/adapter")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-bf16", action="store_true", help="fp32 even where the accelerator supports bf16")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--chat-template", help="Jinja chat template file, for models without one")
    return p


def run_train(argv: list[str]) -> int:
    from finetune.sft import SftOptions, check_model, dataset_dir, train

    args = train_parser().parse_args(argv)
    dataset_dir(args.dataset)  # fail fast, before the heavy imports
    check_model(args.model)
    if args.merge and not args.lora:
        raise FinetuneUsageError("--merge applies to LoRA only")
    options = SftOptions(
        model=args.model,
        dataset=args.dataset,
        out=args.out,
        lora=args.lora,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        warmup_ratio=args.warmup_ratio,
        scheduler=args.scheduler,
        max_steps=args.max_steps,
        save_steps=args.save_steps,
        max_length=args.max_length,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        merge=args.merge,
        resume=args.resume,
        seed=args.seed,
        bf16=False if args.no_bf16 else None,
        gradient_checkpointing=args.gradient_checkpointing,
        chat_template=args.chat_template,
    )
    print(json.dumps(train(options), indent=2))
    return 0


def run_tiny(argv: list[str]) -> int:
    from finetune import build_tiny

    parser = build_tiny.parser()
    parser.prog = "python main.py finetune tiny"
    args = parser.parse_args(argv)
    for spec in args.domains:
        refuse_forbidden(spec)
    if any(count is not None and count < 1 for count in (args.samples, args.warmup_samples)) or args.minutes <= 0:
        raise FinetuneUsageError("--samples and --warmup-samples must be at least 1, --minutes above 0")
    if not all(0.0 <= share <= 1.0 for share in (args.slot_weighting, args.generation_share, args.search_share)):
        raise FinetuneUsageError("--slot-weighting, --generation-share and --search-share must lie in [0, 1]")
    try:
        card = build_tiny.build(args)
    except build_tiny.ModelExists as error:
        raise FinetuneUsageError(str(error)) from None
    print(json.dumps(card, indent=2))
    if warning := build_tiny.undertrained_warning(card):
        print(warning, file=sys.stderr)  # after the card, so that it is not scrolled away
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``curate``, ``train`` or ``tiny``; returns the exit code (2 on bad input)."""
    from finetune.sft import SftError

    argv = sys.argv[1:] if argv is None else list(argv)
    handlers = {"curate": run_curate, "train": run_train, "tiny": run_tiny}
    usage = f"usage: python main.py finetune {{{','.join(SUBCOMMANDS)}}} ... (COMMAND --help for its flags)"
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    if not argv or argv[0] not in handlers:
        print(usage, file=sys.stderr)
        problem = f"unknown finetune command {argv[0]!r}" if argv else "name a finetune command"
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    problem = missing_extra("finetune", FINETUNE_MODULES, "python main.py finetune")
    if problem and not {"-h", "--help"} & set(argv[1:]):
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return handlers[argv[0]](argv[1:])
    except (DomainError, SftError, FinetuneUsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2, already printed)
        return exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT
