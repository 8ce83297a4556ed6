#!/usr/bin/env bash
# What the README's first command installs, against the same install with the training and finetune extras
# (what `pip install -e .` installed before they were extras): wall time, venv size, package count; then, in the
# core venv, the default search runs and a training task and `finetune` each say in one line which extra to add.
# Usage: bash benchmarks/install_size.sh [WORK_FOLDER]   (default: a fresh temporary folder, removed afterwards)
# pip's cache is left as the machine has it, the same for both installs; run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d)}"
[ $# -ge 1 ] || trap 'rm -rf "$work"' EXIT
measure() {  # NAME EXTRAS
    local venv="$work/$1" started
    python3 -m venv "$venv"
    started=$SECONDS
    "$venv/bin/pip" install -q -e ".$2" 2>/dev/null
    printf '| `pip install -e %s` | %s s | %s MB | %s |\n' "'.$2'" "$((SECONDS - started))" \
        "$(du -sm "$venv" | cut -f1)" "$("$venv/bin/pip" list 2>/dev/null | tail -n +3 | wc -l)"
}
echo "| install | wall time | venv size | packages |"
echo "|---|---|---|---|"
measure core ""
measure full "[training,finetune]"
core="$work/core/bin/python"
"$core" main.py --budget 3 --quiet --db "$work/s.db" >/dev/null && echo "core: the default search ran (3 evaluations)"
set +e
"$core" main.py --task diffusion_lora --db "$work/s.db" 2>"$work/err" >/dev/null
echo "core: --task diffusion_lora exit $? in one line: $(cat "$work/err")"
"$core" main.py finetune tiny 2>"$work/err" >/dev/null
echo "core: finetune tiny exit $? in one line: $(cat "$work/err")"
