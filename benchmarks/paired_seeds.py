"""Two bench methods compared seed by seed: the mean paired difference of their best scores per dataset.

    python benchmarks/paired_seeds.py A.json METHOD_A B.json METHOD_B [--optimum DATASET=SCORE ...] [--queries N]

Runs with the same seed start from the same random codes, so the paired difference is far less noisy
than the difference of two means. Prints, per dataset, the mean difference A - B ± its standard error and
the seeds where A is better / worse, then a two-sided sign test over all pairs (ties left out).
Reads the ``runs`` of bench's JSON output (``best``, or ``best_val`` in older files). ``--optimum``
also counts, per dataset named, the seeds of each method whose best is that score (to within 0.001).
``--queries N`` compares the best of each run's first N queries instead (its ``trajectory``, the best so far).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path


def bests(path: Path, method: str, queries: int | None = None) -> dict[tuple[str, int], float]:
    runs = [r for r in json.loads(path.read_text())["runs"] if r["method"] == method]
    if queries is None:
        return {(r["dataset"], r["seed"]): r.get("best", r.get("best_val")) for r in runs}
    short = [r for r in runs if len(r.get("trajectory") or []) < queries]
    if short:
        raise SystemExit(
            f"{path}: {len(short)} runs of {method} have no trajectory of {queries} queries; drop --queries"
        )
    return {(r["dataset"], r["seed"]): r["trajectory"][queries - 1] for r in runs}


def sign_test(better: int, worse: int) -> float:
    """Two-sided binomial p of so uneven a split under a fair coin."""
    n, low = better + worse, min(better, worse)
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(low + 1)) / 2**n) if n else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("method_a")
    parser.add_argument("b", type=Path)
    parser.add_argument("method_b")
    parser.add_argument("--optimum", nargs="+", default=[], metavar="DATASET=SCORE", help="e.g. cifar10=91.607")
    parser.add_argument("--queries", type=int, help="the best of each run's first N queries instead of its best")
    args = parser.parse_args()
    optima = {}
    for given in args.optimum:
        dataset, _, score = given.partition("=")
        try:
            optima[dataset] = float(score)
        except ValueError:
            parser.error(f"--optimum takes DATASET=SCORE, got {given!r}")
    a, b = bests(args.a, args.method_a, args.queries), bests(args.b, args.method_b, args.queries)
    pairs = sorted(set(a) & set(b))
    total_better = total_worse = 0
    for dataset in sorted({d for d, _ in pairs}):
        diffs = [a[key] - b[key] for key in pairs if key[0] == dataset]
        better, worse = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
        total_better, total_worse = total_better + better, total_worse + worse
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
        mean = statistics.fmean(diffs)
        print(f"{dataset:16s} {mean:+.3f} ± {se:.3f}   better {better}, worse {worse}, of {len(diffs)}")
        if dataset in optima:
            keys = [key for key in pairs if key[0] == dataset]
            found = [sum(abs(side[key] - optima[dataset]) < 1e-3 for key in keys) for side in (a, b)]
            print(f"{'':16s} the optimum {optima[dataset]}: A in {found[0]}, B in {found[1]} of {len(diffs)} seeds")
    ties = len(pairs) - total_better - total_worse
    p = sign_test(total_better, total_worse)
    print(f"all {len(pairs)} pairs: better {total_better}, worse {total_worse}, level {ties}; sign test p = {p:.3f}")


if __name__ == "__main__":
    main()
