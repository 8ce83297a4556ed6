"""Optional dependencies. The core install runs every search but the training tasks and ranker fine-tuning,
whose packages (diffusers, peft, trl, datasets and what they pull in) are extras; a feature whose extra is
missing says in one line which one to add, before any work."""

from __future__ import annotations

from importlib.util import find_spec

EXTRAS = {
    "training": "the training tasks diffusion_lora, sam_lora and hat_mt",
    "finetune": "fine-tuning a ranker (python main.py finetune)",
}


def missing_extra(extra: str, modules: tuple[str, ...], what: str) -> str | None:
    """Why ``what`` cannot run (the modules of ``extra`` it needs are not installed), or None when it can."""
    missing = [module for module in modules if find_spec(module) is None]
    if not missing:
        return None
    return (
        f"{what} needs the {extra!r} extra ({', '.join(missing)} not installed): pip install -e '.[{extra}]' "
        f"(from the repository's folder)"
    )
