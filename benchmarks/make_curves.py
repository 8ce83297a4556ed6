"""Train every configuration of a small MLP space on scikit-learn's digits and save the learning curves.

Why: the searches and peers in this repository need a multi-fidelity table whose curves are real (measured, not
made up) and small enough to rebuild on two CPU cores, so that early-stopping methods (Hyperband, ASHA, ...) can be
replayed on it at no cost. LCBench is the model: an MLP whose depth, width, learning rate, batch size and weight
decay are searched, trained by SGD with momentum 0.9 and a cosine learning-rate schedule, with the validation accuracy
after every epoch kept. Here each of those five hyper-parameters takes three values (243 configurations), the
network is funnel-shaped like LCBench's (widths fall linearly from ``max_units`` towards the 10 classes), and every
configuration is trained for 27 epochs, so that the rungs 1, 3, 9 and 27 of reduction factor 3 exist.

Data: ``sklearn.datasets.load_digits`` (1,797 8x8 images, shipped inside scikit-learn, which the project installs
through pysodmetrics), split once by a fixed permutation (seed 0) into 1,077 training, 360 validation and 360 test
images; each pixel is standardised with the training mean and standard deviation (a standard deviation below 1 of the
16 grey levels counts as 1, so that pixels almost always blank on the training set are not blown up).

Reproducibility: one torch thread per process, deterministic algorithms, and every configuration trained from the
same seed (``--seed``: the same initial weights for the same architecture and the same batch order for the same
batch size), so a configuration's curve does not depend on the order or the process it is trained in. Accuracies
reproduce exactly; ``epoch_s`` (training seconds per epoch) is a wall-clock measurement and does not.

Output (the format of ``--task table``, see evaluators/table.py): ``space.yaml`` and ``curves.json``, a JSON list
with one row per configuration: one key per slot (the option value), ``val_acc`` (the 27 per-epoch validation
accuracies), ``val_acc_final`` (the last of them), ``test_acc`` (after epoch 27), ``params`` and ``epoch_s``.

Usage::

    python benchmarks/make_curves.py                   # writes benchmarks/data/digits_mlp/{space.yaml,curves.json}
    python benchmarks/make_curves.py --out /tmp/x --force --workers 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 27
RUNGS = (1, 3, 9, 27)
DIGITS = 5  # accuracies are rounded to 5 decimals: the validation set has 360 images, so nothing is lost

SPACE: dict[str, Any] = {
    "name": "digits_mlp",
    "description": (
        "Funnel-shaped MLP on scikit-learn's digits (LCBench-like, discretised), SGD with momentum 0.9 and a cosine "
        "learning-rate schedule over 27 epochs; curves.json holds the per-epoch validation accuracy"
    ),
    "rule": "none",
    "slots": [
        {"name": "num_layers", "options": [1, 2, 3], "description": "number of hidden layers"},
        {
            "name": "max_units",
            "options": [16, 64, 256],
            "description": "width of the first hidden layer; later layers shrink linearly towards the 10 classes",
        },
        {"name": "learning_rate", "options": [0.001, 0.01, 0.1], "description": "initial SGD learning rate"},
        {"name": "batch_size", "options": [16, 64, 256], "description": "mini-batch size"},
        {"name": "weight_decay", "options": [0.0, 0.0001, 0.01], "description": "L2 weight decay of SGD"},
    ],
}
SLOT_NAMES = [slot["name"] for slot in SPACE["slots"]]


def configurations() -> list[dict[str, Any]]:
    """Every configuration of SPACE, in NCode order (the first slot varies slowest)."""
    options = [slot["options"] for slot in SPACE["slots"]]
    return [dict(zip(SLOT_NAMES, values, strict=True)) for values in itertools.product(*options)]


def split_digits() -> dict[str, Any]:
    """The fixed train/validation/test split, as float32 arrays (numpy, so that it pickles to worker processes)."""
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    test, val = slice(0, 360), slice(360, 720)
    train = slice(720, len(y))
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    std[std < 1.0] = 1.0  # a pixel almost always blank on the training set (std < 1 of 16 levels) is not blown up
    return {name: ((x[part] - mean) / std, y[part]) for name, part in (("train", train), ("val", val), ("test", test))}


def widths(num_layers: int, max_units: int, classes: int = 10) -> list[int]:
    """LCBench's funnel: hidden widths fall linearly from max_units towards the number of classes."""
    return [round(max_units - layer * (max_units - classes) / num_layers) for layer in range(num_layers)]


def train_one(config: dict[str, Any], data: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train one configuration for EPOCHS epochs; return its row (curve, test accuracy, size, seconds per epoch)."""
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    x_train, y_train = (torch.from_numpy(array) for array in data["train"])
    x_val, y_val = (torch.from_numpy(array) for array in data["val"])
    x_test, y_test = (torch.from_numpy(array) for array in data["test"])
    layers: list[torch.nn.Module] = []
    width = x_train.shape[1]
    for units in widths(config["num_layers"], config["max_units"]):
        layers += [torch.nn.Linear(width, units), torch.nn.ReLU()]
        width = units
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config["learning_rate"], momentum=0.9, weight_decay=config["weight_decay"]
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
    order = torch.Generator().manual_seed(seed)

    def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            logits = model(x)
        model.train()
        # a diverged network's NaN logits count as wrong (argmax of NaN would pick a class arbitrarily)
        correct = (logits.argmax(1) == y) & torch.isfinite(logits).all(1)
        return round(correct.float().mean().item(), DIGITS)

    curve, seconds = [], 0.0
    for _ in range(EPOCHS):
        start = time.perf_counter()
        permutation = torch.randperm(len(y_train), generator=order)
        for first in range(0, len(y_train), config["batch_size"]):
            batch = permutation[first : first + config["batch_size"]]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
        scheduler.step()
        seconds += time.perf_counter() - start
        curve.append(accuracy(x_val, y_val))
    return {
        **config,
        "val_acc": curve,
        "val_acc_final": curve[-1],
        "test_acc": accuracy(x_test, y_test),
        "params": sum(parameter.numel() for parameter in model.parameters()),
        "epoch_s": round(seconds / EPOCHS, 5),
    }


def _work(job: tuple[dict[str, Any], dict[str, Any], int]) -> dict[str, Any]:
    return train_one(*job)


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties), without scipy."""

    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        result = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                result[order[k]] = (i + j) / 2
            i = j + 1
        return result

    ra, rb = ranks(a), ranks(b)
    mean_a, mean_b = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(ra, rb, strict=True))
    var_a = sum((x - mean_a) ** 2 for x in ra)
    var_b = sum((y - mean_b) ** 2 for y in rb)
    return cov / (var_a * var_b) ** 0.5


def summarize(rows: list[dict[str, Any]]) -> str:
    """How informative early epochs are about the final ranking, and what kinds of curves the table holds."""
    final = [row["val_acc"][-1] for row in rows]
    lines = [f"{len(rows)} configurations, {EPOCHS} epochs each"]
    for epoch in (1, 3, 9):
        rho = spearman([row["val_acc"][epoch - 1] for row in rows], final)
        lines.append(f"Spearman(val_acc at epoch {epoch}, at epoch {EPOCHS}) = {rho:.3f}")
    top = sorted(range(len(rows)), key=final.__getitem__, reverse=True)
    for epoch in (1, 3, 9):
        early = sorted(range(len(rows)), key=lambda i, e=epoch: rows[i]["val_acc"][e - 1], reverse=True)
        overlap = len(set(early[: len(rows) // 9]) & set(top[: len(rows) // 9]))
        lines.append(f"top-1/9 at epoch {epoch} that are top-1/9 at epoch {EPOCHS}: {overlap}/{len(rows) // 9}")
    best = rows[top[0]]
    lines.append(
        f"best final val_acc {best['val_acc_final']:.5f} (test {best['test_acc']:.5f}): "
        + ", ".join(f"{name}={best[name]}" for name in SLOT_NAMES)
    )
    low = sum(1 for row in rows if row["val_acc_final"] < 0.2)
    collapsed = sum(1 for row in rows if max(row["val_acc"]) >= 0.5 and row["val_acc_final"] < 0.2)
    plateau = sum(1 for row in rows if row["val_acc"][2] >= 0.9 and row["val_acc_final"] - row["val_acc"][2] < 0.02)
    slow = sum(1 for row in rows if row["val_acc"][2] < 0.7 and row["val_acc_final"] >= 0.9)
    lines.append(
        f"curves: {low} end below 0.2, {collapsed} of them after reaching 0.5 (diverged), {plateau} reach 0.9 by "
        f"epoch 3 and gain < 0.02 after, {slow} are below 0.7 at epoch 3 but end >= 0.9"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data" / "digits_mlp")
    parser.add_argument("--force", action="store_true", help="overwrite existing space.yaml / curves.json")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="training processes")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of every configuration")
    parser.add_argument("--limit", type=int, default=None, help="train only the first N configurations (a quick try)")
    args = parser.parse_args(argv)

    space_path, curves_path = args.out / "space.yaml", args.out / "curves.json"
    existing = [str(path) for path in (space_path, curves_path) if path.exists()]
    if existing and not args.force:
        print(f"refusing to overwrite {', '.join(existing)}; pass --force to rebuild", file=sys.stderr)
        return 1
    data = split_digits()
    jobs = [(config, data, args.seed) for config in configurations()[: args.limit]]
    start = time.perf_counter()
    if args.workers > 1:
        # spawn, not fork: each worker starts its own torch with one thread
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            rows = pool.map(_work, jobs, chunksize=1)
    else:
        rows = [_work(job) for job in jobs]
    elapsed = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    space_path.write_text(yaml.safe_dump(SPACE, sort_keys=False, width=120, default_flow_style=None))
    curves_path.write_text(json.dumps(rows, separators=(",", ":")) + "\n")
    print(summarize(rows))
    print(f"trained {len(rows)} configurations in {elapsed:.0f} s with {args.workers} worker(s); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
