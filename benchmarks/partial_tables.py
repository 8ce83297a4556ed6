"""The default against Bayesian optimisation on partial tables, the form most published NAS data comes in.

    python benchmarks/partial_tables.py [--seeds 10] [--jobs 2] [--tables nb101,tb101:jigsaw,...]
    python benchmarks/partial_tables.py --methods llm-expected-mixed-pool --variant NAME   # after a change
    python benchmarks/partial_tables.py --methods llm-expected-mixed-pool --variant NAME --model FOLDER
    python benchmarks/partial_tables.py --summary --compare NAME
    python benchmarks/partial_tables.py --summary --instead NAME   # NAME's runs ranked in the default's place

Tables (from the training domains in ../shared/data/train_domains, never NAS-Bench-201): NASLib's NAS-Bench-101
(500 sampled cells) and NAS-Bench-301 (725) samples and TransNAS-Bench-101 macro samples (662-725 of 6,400
codes, 7 tasks), as they are; and 500-row subsamples (fixed by a seed) of the complete NAS-Bench-Macro (6,561)
and Channel-Bench-Macro (16,384) tables. Each is written as a ``--task table`` folder (space.yaml, results.csv),
so every method searches it through ``python main.py bench`` as a user's own table: only the rows that exist
can be evaluated.

Methods, 100 queries, the same seeds: the default (``llm-expected-mixed-pool``: LM-Searcher-tiny in process, the
mixed pool), ``gp`` (Optuna's GPSampler) and ``tpe`` (Optuna's TPESampler). Reported: each method's rank among
them per table and seed at 30, 50 and 100 queries (1 is best; ties share the mean rank), its mean per table
family (nb101, nb301, tb101, macro-500, channel-500) and over all tables.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "partial_tables"
TABLES = ("nb101", "nb301", *(f"tb101:{task}" for task in (
    "class_scene", "class_object", "jigsaw", "room_layout", "segmentsemantic", "normal", "autoencoder"
)), "macro@500", "channel@500")  # fmt: skip
METHODS = ("llm-expected-mixed-pool", "gp", "tpe")
QUERIES = (30, 50, 100)
SUBSAMPLE_SEED = 0


def write_table(table: str, folder: Path) -> tuple[Path, Path, int]:
    """The table as a ``--task table`` folder: its space and one row per code that has a score."""
    from finetune.domains import load_domain

    spec, _, rows = table.partition("@")
    (domain,) = load_domain(spec)
    codes = list(domain.codes)
    if rows:
        codes = sorted(random.Random(f"{SUBSAMPLE_SEED}/{spec}").sample(codes, int(rows)))
    space = {
        "name": domain.name.replace(":", "-"),
        "slots": [{"name": slot.name, "options": list(slot.options)} for slot in domain.space.slots],
    }
    space_file, data_file = folder / "space.yaml", folder / "results.csv"
    space_file.write_text(yaml.safe_dump(space, sort_keys=False))
    data_file.write_text("ncode,val_acc\n" + "".join(f"{code},{domain.score(code)}\n" for code in codes))
    return space_file, data_file, len(codes)


def run_table(table: str, seeds: int, budget: int, methods: tuple[str, ...], variant: str, model: str) -> Path:
    """Every method on one table through ``bench``; returns bench's JSON (in ``variant``'s folder, if named).
    ``model``: the in-process methods' model folder (default: the shipped one)."""
    from agent.cli.bench import main as bench

    folder_out = RESULTS / variant if variant else RESULTS
    folder_out.mkdir(parents=True, exist_ok=True)
    out = folder_out / stem(table)
    with tempfile.TemporaryDirectory() as folder:
        space, data, rows = write_table(table, Path(folder))
        print(f"{table}: {rows} rows", flush=True)
        code = bench([
            "--task", "table", "--space", str(space), "--data", str(data), "--metric", "val_acc",
            "--methods", *methods, "--seeds", str(seeds), "--budget", str(budget), "--out", str(out),
            *(["--model", model] if model else []),
        ])  # fmt: skip
    if code:
        raise SystemExit(f"bench failed on {table}")
    return out.with_suffix(".json")


def stem(table: str) -> str:
    return table.replace(":", "-").replace("@", "-")


def trajectories(tables: list[str], variants: list[str], seeds: range) -> dict[str, dict[str, dict[int, list]]]:
    """table stem -> method label -> seed -> best-so-far trajectory; a variant's methods labelled METHOD@VARIANT."""
    found: dict[str, dict[str, dict[int, list]]] = {}
    for variant in ["", *variants]:
        for table in tables:
            path = (RESULTS / variant if variant else RESULTS) / f"{stem(table)}.json"
            if not path.exists():
                continue
            for run in json.loads(path.read_text())["runs"]:
                if run["seed"] in seeds:
                    label = f"{run['method']}@{variant}" if variant else run["method"]
                    found.setdefault(stem(table), {}).setdefault(label, {})[run["seed"]] = run["trajectory"]
    return found


def ranks(values: dict[str, float | None]) -> dict[str, float]:
    """Rank 1 for the best (highest) value; ties share their mean rank; no value ranks last."""
    ordered = sorted(values, key=lambda m: -(values[m] if values[m] is not None else float("-inf")))
    result: dict[str, float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and values[ordered[j + 1]] == values[ordered[i]]:
            j += 1
        for method in ordered[i : j + 1]:
            result[method] = (i + j) / 2 + 1
        i = j + 1
    return result


def summary(found: dict[str, dict[str, dict[int, list]]], seeds: range) -> str:
    methods = sorted({label for by_method in found.values() for label in by_method}, key=label_order)
    tables = [name for name, by_method in found.items() if set(by_method) == set(methods)]  # every method ran
    per_family: dict[tuple[str, int], dict[str, list[float]]] = {}
    overall: dict[int, dict[str, list[float]]] = {n: {m: [] for m in methods} for n in QUERIES}
    best_at: dict[tuple[str, int], dict[str, list[float]]] = {}
    for name in tables:
        for n in QUERIES:
            for seed in seeds:
                best = {m: at(found[name][m][seed], n) for m in methods}
                for method, rank in ranks(best).items():
                    per_family.setdefault((family(name), n), {m: [] for m in methods})[method].append(rank)
                    overall[n][method].append(rank)
                    best_at.setdefault((name, n), {m: [] for m in methods})[method].append(best[method])
    lines = [f"Mean rank among {', '.join(methods)} (1 = best), seeds {seeds[0]}-{seeds[-1]}:", ""]
    lines.append("| tables | queries | " + " | ".join(methods) + " |")
    lines.append("|---|---|" + "---|" * len(methods))
    for (name, n), by_method in sorted(per_family.items()):
        cells = " | ".join(f"{statistics.mean(by_method[m]):.2f}" for m in methods)
        lines.append(f"| {name} | {n} | {cells} |")
    for n in QUERIES:
        cells = " | ".join(f"**{statistics.mean(overall[n][m]):.2f}**" for m in methods)
        lines.append(f"| all {len(tables)} tables | {n} | {cells} |")
    lines += ["", f"{methods[0]} against each other method, paired by (table, seed): better/level/worse", ""]
    for other in methods[1:]:
        counts = []
        for n in QUERIES:
            pairs = [(at(found[t][methods[0]][s], n), at(found[t][other][s], n)) for t in tables for s in seeds]
            better, worse = sum(a > b for a, b in pairs), sum(a < b for a, b in pairs)
            counts.append(
                f"{n} queries {better}/{len(pairs) - better - worse}/{worse} (sign test p {sign_p(better, worse)})"
            )
        lines.append(f"- against {other}: " + ", ".join(counts))
    lines += ["", "Mean best val_acc per table:", "", "| table | queries | " + " | ".join(methods) + " |"]
    lines.append("|---|---|" + "---|" * len(methods))
    for (name, n), by_method in sorted(best_at.items()):
        cells = " | ".join(f"{statistics.mean(v for v in by_method[m] if v is not None):.4f}" for m in methods)
        lines.append(f"| {name} | {n} | {cells} |")
    return "\n".join(lines)


def sign_p(better: int, worse: int) -> str:
    """The two-sided sign test's p-value of ``better`` against ``worse`` pairs (level ones left out)."""
    from scipy.stats import binomtest

    return f"{binomtest(better, better + worse).pvalue:.2f}" if better + worse else "-"


def at(trajectory: list, queries: int) -> float | None:
    """The best found within ``queries`` (a run that ended sooner: its last)."""
    return trajectory[min(queries, len(trajectory)) - 1]


def label_order(label: str) -> tuple[int, str]:
    """The default first, its variants next (whatever bench method they ran), then the peers."""
    method, _, variant = label.partition("@")
    return (0 if variant or method not in METHODS else METHODS.index(method), variant)


def family(stem: str) -> str:
    """nb101, nb301, tb101 (its 7 tasks together), macro-500, channel-500."""
    return stem if stem.startswith(("macro", "channel")) else stem.split("-")[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 of every method on every table")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1, help="tables searched at once")
    parser.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated, of: {', '.join(TABLES)}")
    parser.add_argument("--methods", default=",".join(METHODS), help="bench methods, comma-separated")
    parser.add_argument(
        "--variant", default="", help="write to results/partial_tables/VARIANT/ (a change to the default, measured "
        "beside the peers' runs in results/partial_tables/)",
    )  # fmt: skip
    parser.add_argument(
        "--model", default="", help="the in-process methods' model folder, e.g. a copy of the shipped model whose "
        "card sets another prompt setting (default: the shipped model)",
    )  # fmt: skip
    parser.add_argument("--compare", default="", help="variants to summarise beside the base runs, comma-separated")
    parser.add_argument("--summary", action="store_true", help="only summarise the JSON files already written")
    parser.add_argument(
        "--instead", default="", help="a variant to summarise in the default's place: ranked against the peers "
        "alone, as if it were the default",
    )  # fmt: skip
    args = parser.parse_args()
    tables = args.tables.split(",")
    if not args.summary:
        methods = tuple(args.methods.split(","))
        each = partial(run_table, seeds=args.seeds, budget=args.budget, methods=methods, variant=args.variant,
                       model=args.model)  # fmt: skip
        with ProcessPoolExecutor(args.jobs) as pool:
            list(pool.map(each, tables))
    variants = list(dict.fromkeys(v for v in [*args.compare.split(","), args.variant, args.instead] if v))
    found = trajectories(tables, variants, range(args.seeds))
    if args.instead:
        for by_method in found.values():
            by_method.pop(METHODS[0], None)
    print(summary(found, range(args.seeds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
