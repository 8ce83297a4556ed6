"""Hyperparameter search with ranges and conditional slots: the README's HPO space, real training, 30 evaluations.

    python benchmarks/hpo.py [--seeds 0-4] [--budget 30] [--jobs 2] [--out FILE]
    python benchmarks/hpo.py --summary benchmarks/results/hpo.json

The space (the README's, in YAML there): Adam's learning rate (1e-4 to 1e-1, log, 13 levels) and L2 weight decay
(1e-6 to 1e-1, log, 6 levels), the depth (1 to 4 hidden layers), and each layer's width (16 to 256, log, 5
levels), a width slot active only when the depth reaches it: 60,840 distinct configurations. Each evaluation
trains that MLP for 15 epochs (minibatches of 128) on a made-up 10-class problem (3,000 points in 16 dimensions,
labelled by a fixed random teacher network with 10% label noise) and returns its validation accuracy on 1,000
held-out points. Training is seeded, so a configuration always scores the same; each process keeps what it
trained, so methods that ask for the same configuration share the work.

Methods, through ``Study`` with the same seeds: the default (LM-Searcher-tiny), ``tpe``, ``gp`` and ``random``
on the grid; and Optuna's own TPE, define-by-run with continuous learning rate and weight decay and integer widths
(what an Optuna user writes), as a peer outside the grid.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import torch
from seeds import parse_seeds

from agent import SearchSpace, Slot, Study

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("inprocess", "tpe", "gp", "random", "optuna-tpe")
MAX_DEPTH = 4
EPOCHS = 15


def space() -> SearchSpace:
    """The README's HPO space."""
    widths = [Slot.int(f"width_{k}", 16, 256, log=True, levels=5, when={"depth": list(range(k, MAX_DEPTH + 1))})
              for k in range(2, MAX_DEPTH + 1)]  # fmt: skip
    return SearchSpace(
        "mlp-hpo",
        [
            Slot.float("lr", 1e-4, 1e-1, log=True, levels=13),
            Slot.float("weight_decay", 1e-6, 1e-1, log=True, levels=6),
            Slot.int("depth", 1, MAX_DEPTH),
            Slot.int("width_1", 16, 256, log=True, levels=5),
            *widths,
        ],
    )


def make_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """3,000 training and 1,000 validation points, labelled by a fixed random two-layer teacher, 10% flipped."""
    generator = torch.Generator().manual_seed(12345)
    x = torch.randn(4000, 16, generator=generator)
    hidden = torch.tanh(x @ torch.randn(16, 64, generator=generator) * 0.6)
    y = (hidden @ torch.randn(64, 10, generator=generator)).argmax(dim=1)
    flip = torch.rand(4000, generator=generator) < 0.1
    y[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=generator)
    return x[:3000], y[:3000], x[3000:], y[3000:]


_DATA = make_data()
_TRAINED: dict[tuple, float] = {}


def train(config: dict[str, Any]) -> float:
    """Validation accuracy of the configuration's MLP after 15 epochs of Adam; seeded, so deterministic."""
    widths = [int(config[f"width_{k}"]) for k in range(1, int(config["depth"]) + 1)]
    key = (float(config["lr"]), float(config["weight_decay"]), *widths)
    if key in _TRAINED:
        return _TRAINED[key]
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    previous = 16
    for width in widths:
        layers += [torch.nn.Linear(previous, width), torch.nn.ReLU()]
        previous = width
    model = torch.nn.Sequential(*layers, torch.nn.Linear(previous, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(config["lr"]), weight_decay=float(config["weight_decay"]))
    x_train, y_train, x_val, y_val = _DATA
    order = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(x_train), generator=order).split(128):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(x_val).argmax(dim=1) == y_val).float().mean().item()
    _TRAINED[key] = accuracy
    return accuracy


def run_ours(method: str, seed: int, budget: int) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        study = Study.create(
            Path(folder) / "hpo.db", space(), train, metric="val_acc", ranker=method, budget=budget, seed=seed
        )
        with study:
            study.optimize()
            return [trial.score for trial in study.history]


def run_optuna(seed: int, budget: int) -> list[float]:
    def objective(trial: optuna.Trial) -> float:
        depth = trial.suggest_int("depth", 1, MAX_DEPTH)
        config = {
            "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
            "depth": depth,
        } | {f"width_{k}": trial.suggest_int(f"width_{k}", 16, 256, log=True) for k in range(1, depth + 1)}
        return train(config)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=budget)
    return [trial.value for trial in study.trials]


def one_run(job: tuple[str, int, int]) -> dict[str, Any]:
    method, seed, budget = job
    torch.set_num_threads(1)
    scores = run_optuna(seed, budget) if method == "optuna-tpe" else run_ours(method, seed, budget)
    print(f"{method} seed {seed}: best {max(scores):.4f}", flush=True)
    return {"method": method, "seed": seed, "scores": scores}


def summary(document: dict[str, Any]) -> list[str]:
    """Per method: mean and median best over seeds, and seed-paired wins-ties-losses of the default against it."""
    runs, budget = document["runs"], document["budget"]
    best = {(r["method"], r["seed"]): max(r["scores"][:budget]) for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    lines = [f"{'method':<12}{'mean best':>10}{'median':>9}{'worst':>8}   default better-level-worse   per seed"]
    for method in METHODS:
        values = [best[method, seed] for seed in seeds if (method, seed) in best]
        if not values:
            continue
        pairs = [
            (best["inprocess", s], best[method, s]) for s in seeds if {("inprocess", s), (method, s)} <= best.keys()
        ]
        record = f"{sum(a > b for a, b in pairs)}-{sum(a == b for a, b in pairs)}-{sum(a < b for a, b in pairs)}"
        lines.append(
            f"{method:<12}{statistics.fmean(values):>10.4f}{statistics.median(values):>9.4f}{min(values):>8.4f}"
            f"   {'' if method == 'inprocess' else record:<28} {' '.join(f'{v:.4f}' for v in values)}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path, help="print the summary of a results file and stop")
    args = parser.parse_args(argv)
    if args.summary:
        print("\n".join(summary(json.loads(args.summary.read_text()))))
        return 0
    jobs = [(method, seed, args.budget) for method in args.methods.split(",") for seed in parse_seeds(args.seeds)]
    with ProcessPoolExecutor(args.jobs) as pool:
        document = {"budget": args.budget, "epochs": EPOCHS, "runs": list(pool.map(one_run, jobs))}
    out = args.out or RESULTS / "hpo.json"
    out.write_text(json.dumps(document) + "\n")
    print("\n".join(summary(document)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
