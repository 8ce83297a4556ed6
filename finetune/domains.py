"""Training domains for ranker data. NAS-Bench-201 is refused: it is the evaluation domain.

- ``nbg:DATASET``: NAS-Bench-Graph (9 datasets) from the PyPI package;
- ``macro`` and ``channel``: NAS-Bench-Macro and Channel-Bench-Macro tables;
- ``nb101``, ``nb301``, ``tb101:TASK``: NASLib's NAS-Bench-Suite-Zero samples, where each
  architecture tuple becomes a code (one slot per varying position of the tuple);
- ``synthetic:N`` or ``synthetic:N:LO-HI``: N synthetic landscapes (see
  ``finetune.landscapes``) of 3-16 slots, or LO-HI slots (a warm-up curriculum).
The tables are read from ``--data`` (default ../shared/data/train_domains).
"""

from __future__ import annotations

import itertools
import json
import random
import re

from evaluators.data_path import find_file
from finetune.curate import Domain
from finetune.landscapes import METRIC, random_landscape
from tools.evaluator import EvaluatorSetupError, Metric
from tools.ncode import SearchSpace, Slot, from_indices, is_valid, normalize

FORBIDDEN = ("nb201", "nasbench201", "nas-bench-201", "nas_bench_201")
TB101_TASKS = ("class_scene", "class_object", "jigsaw", "room_layout", "segmentsemantic", "normal", "autoencoder")
DEFAULT_DOMAINS = ("nbg:all", "macro", "channel", "nb101", "nb301", "tb101:all", "synthetic:300")
ORIGIN = "the shared benchmark folder (see ../shared/data/README.md for the public originals)"


class DomainError(ValueError):
    """A domain that cannot be used for training data; says why."""


def _table_file(name: str, data: str | None) -> dict:
    return json.loads(find_file(name, "train_domains", data, ORIGIN).read_text())


def tuple_domain(name: str, rows: dict[str, float], description: str) -> Domain:
    """A table keyed by integer tuples: one slot per position whose value varies."""
    keys = {key: tuple(int(v) for v in (key if key.isdigit() else re.findall(r"-?\d+", key))) for key in rows}
    width = len(next(iter(keys.values())))
    varying = [i for i in range(width) if len({k[i] for k in keys.values()}) > 1]
    options = [sorted({k[i] for k in keys.values()}) for i in varying]
    slots = tuple(Slot(f"p{i}", tuple(opts)) for i, opts in zip(varying, options, strict=True))
    codes = {
        from_indices(opts.index(k[i]) for i, opts in zip(varying, options, strict=True)): rows[key]
        for key, k in keys.items()
    }
    space = SearchSpace(name, slots, description=description)
    return Domain(name, space, Metric("val_acc", True, description), codes.get, tuple(sorted(codes)))


def nbg_domain(dataset: str) -> Domain:
    from evaluators.nas_bench_graph import NasBenchGraphEvaluator

    evaluator = NasBenchGraphEvaluator(dataset)
    space = evaluator.space
    every = itertools.product(*(range(len(slot.options)) for slot in space.slots))
    codes = sorted({normalize(space, from_indices(choice)) for choice in every} - {""})
    codes = [code for code in codes if is_valid(space, code)]
    scores = {code: float(evaluator.evaluate(code).score) for code in codes}
    return Domain(f"nbg:{dataset}", space, evaluator.metric, scores.get, tuple(codes))


def refuse_forbidden(spec: str) -> None:
    """Raise :class:`DomainError` for any spec naming NAS-Bench-201 (checked before anything loads)."""
    if any(word in spec.lower().replace("_", "-") for word in ("201", *FORBIDDEN)):
        raise DomainError(f"refusing {spec!r}: NAS-Bench-201 is the evaluation domain and must never be trained on")


def load_domain(spec: str, data: str | None = None, seed: int = 0) -> list[Domain]:
    """The domains a spec names (``nbg:all`` and ``tb101:all`` name several)."""
    refuse_forbidden(spec)
    kind, _, arg = spec.partition(":")
    try:
        if kind == "nbg":
            from evaluators.nas_bench_graph import NBG_DATASETS

            return [nbg_domain(d) for d in (NBG_DATASETS if arg in ("", "all") else (arg,))]
        if kind == "macro":
            table = _table_file("nas_bench_macro_cifar10.json", data)
            return [tuple_domain("nas-bench-macro", {k: v["mean_acc"] for k, v in table.items()}, "CIFAR-10 accuracy")]
        if kind == "channel":
            table = _table_file("channel_bench_macro_resnet.json", data)
            rows = {k: v["mean"] for k, v in table.items()}
            return [tuple_domain("channel-bench-macro", rows, "ResNet channel widths, CIFAR-10 accuracy")]
        if kind in ("nb101", "nb301"):
            name = "naslib_zc_nasbench101.json" if kind == "nb101" else "naslib_zc_nasbench301.json"
            table = _table_file(name, data)
            rows = table["nasbench101"]["cifar10"] if kind == "nb101" else table["cifar10"]
            return [tuple_domain(kind, {k: v["val_accuracy"] for k, v in rows.items()}, "CIFAR-10 accuracy")]
        if kind == "tb101":
            table = _table_file("naslib_zc_transbench101_macro.json", data)
            tasks = TB101_TASKS if arg in ("", "all") else (arg,)
            return [
                tuple_domain(f"tb101:{t}", {k: v["val_accuracy"] for k, v in table[t].items()}, f"TransNAS-Bench {t}")
                for t in tasks
                if t in table
            ]
        if kind == "synthetic":
            count, _, slots = arg.partition(":")
            low, _, high = (slots or "3-16").partition("-")
            if not 1 <= int(low) <= int(high or low):
                raise ValueError(f"slot range {slots!r} is empty; write LO-HI with 1 <= LO <= HI")
            rng = random.Random(f"synthetic/{seed}" + (f"/{slots}" if slots else ""))
            landscapes = [random_landscape(rng, (int(low), int(high or low))) for _ in range(int(count or 100))]
            return [Domain(land.space.name, land.space, METRIC, land.score) for land in landscapes]
    except EvaluatorSetupError as error:
        raise DomainError(str(error)) from None
    except (KeyError, ValueError) as error:
        raise DomainError(f"domain {spec!r} cannot be read: {error}") from None
    raise DomainError(
        f"unknown domain {spec!r}; valid: nbg[:DATASET], macro, channel, nb101, nb301, tb101[:TASK], "
        "synthetic:N[:LO-HI]"
    )
