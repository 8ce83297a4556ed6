# Sourced by benchmarks/vllm_check.sh and benchmarks/logprobs_nbg.sh: the README's CPU vLLM server of a model
# folder (float32, its chat template) on a free loopback port, in its own process group, stopped on any exit.
#
#   start_vllm VENV MODEL SERVED_NAME LOG [FLAG...]   start it and wait for /health (at most 600 s; on failure the
#                                                      log's tail, then exit 1); sets PORT, SERVER and SERVE_S (the
#                                                      seconds it took to answer)
#   stop_server                                        stop the whole group: vLLM's engine and workers too

start_vllm() {
    local venv=$1 model=$2 served=$3 log=$4 started
    shift 4
    PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    VLLM_CPU_KVCACHE_SPACE=1 setsid "$venv/bin/python" -m vllm.entrypoints.openai.api_server \
        --model "$model" --served-model-name "$served" --dtype float32 \
        --chat-template "$model/chat_template.jinja" --host 127.0.0.1 --port "$PORT" "$@" >"$log" 2>&1 &
    SERVER=$!
    trap stop_server EXIT
    started=$(date +%s)
    until python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/health', timeout=2)" 2>/dev/null; do
        if ! kill -0 "$SERVER" 2>/dev/null || (($(date +%s) - started > 600)); then
            tail -20 "$log"
            echo "$(basename "$0" .sh): FAILED: vLLM did not start (log: $log)"
            exit 1
        fi
        sleep 1
    done
    SERVE_S=$(($(date +%s) - started))
    echo "vLLM answered /health after $SERVE_S s"
}

stop_server() {
    kill -TERM -- "-$SERVER" 2>/dev/null || return 0
    for _ in $(seq 75); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
}
