#!/usr/bin/env bash
# Run real Python rerank clients (from PyPI, unchanged) against a real `rerank serve`.
#
#   examples/clients/run.sh [path/to/rerank]      (default: target/release/rerank)
#
# For each requirements/<group>.txt a venv is made under $RERANK_CLIENTS_VENVS
# (default ~/.cache/rerank-clients) and reused while the file is unchanged. The
# server is started on the tiny test model twice, without a key and with
# --api-key my-key, and check_clients.py runs once per venv against each, then
# readme_snippets.py runs the README's "Use it from your framework" snippets.
# The combined table is printed and written to ${OUT:-/tmp/rerank-clients}/results.md.
# Exit status: 0 if no client failed, 1 otherwise.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RERANK="${1:-$ROOT/target/release/rerank}"
VENVS="${RERANK_CLIENTS_VENVS:-$HOME/.cache/rerank-clients}"
OUT="${OUT:-/tmp/rerank-clients}"
MODEL_DIR="$ROOT/tests/fixtures/tiny"
SERVED_NAME="bge-reranker-v2-m3" # no '/': Dify's xinference plugin rejects a model uid with one
KEY="my-key" # the key the README snippets send
PYTHON="${PYTHON:-python3}"

[ -x "$RERANK" ] || { echo "no rerank binary at $RERANK (build it: cargo build --release)" >&2; exit 2; }
mkdir -p "$VENVS" "$OUT"
rm -f "$OUT"/*.json

groups=()
for req in "$HERE"/requirements/*.txt; do groups+=("$(basename "$req" .txt)"); done

# 1. The venvs: one per requirements file, reinstalled when the file changes.
for g in "${groups[@]}"; do
    venv="$VENVS/$g"
    if [ -x "$venv/bin/python" ] && cmp -s "$HERE/requirements/$g.txt" "$venv/.requirements.txt"; then
        continue
    fi
    echo "== installing venv $g into $venv (log: $OUT/install-$g.log)"
    "$PYTHON" -m venv --clear "$venv"
    if ! "$venv/bin/pip" install --disable-pip-version-check -r "$HERE/requirements/$g.txt" >"$OUT/install-$g.log" 2>&1; then
        echo "pip install failed for $g; see $OUT/install-$g.log" >&2
        exit 2
    fi
    cp "$HERE/requirements/$g.txt" "$venv/.requirements.txt"
done

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() { # url pid
    for _ in $(seq 1 120); do
        kill -0 "$2" 2>/dev/null || return 1
        if "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1/ready" 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    return 1
}

server_pid=""
readme_failed=0
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT

# 2. The server, once per mode, and every venv against it.
for mode in nokey key; do
    port="$(free_port)"
    base="http://127.0.0.1:$port"
    args=(serve --model "$MODEL_DIR" --port "$port" --served-model-name "$SERVED_NAME")
    key_args=()
    if [ "$mode" = key ]; then
        args+=(--api-key "$KEY")
        key_args=(--key "$KEY")
    fi
    echo "== $mode: $RERANK ${args[*]} (log: $OUT/server-$mode.log)"
    "$RERANK" "${args[@]}" >"$OUT/server-$mode.log" 2>&1 &
    server_pid=$!
    if ! wait_ready "$base" "$server_pid"; then
        echo "server did not become ready on $base; see $OUT/server-$mode.log" >&2
        exit 2
    fi
    for g in "${groups[@]}"; do
        replicas=(--no-replicas)
        [ "$g" = platforms ] && replicas=() # the Dify/RAGFlow replicas run once, in their venv
        echo "-- $mode / venv $g"
        "$VENVS/$g/bin/python" "$HERE/check_clients.py" --base "$base" "${key_args[@]}" "${replicas[@]}" \
            --json "$OUT/$mode-$g.json" 2>&1 | tee "$OUT/$mode-$g.log" || true
    done
    echo "-- $mode / README snippets"
    "$PYTHON" "$HERE/readme_snippets.py" --base "$base" --venvs "$VENVS" 2>&1 | tee "$OUT/$mode-readme.log" || readme_failed=1
    stop_server
done

# 3. One table for all venvs and both modes.
"$PYTHON" "$HERE/report.py" --out "$OUT/results.md" "$OUT"/*.json || status=$?
[ "$readme_failed" = 0 ] || { echo "some README snippets failed: see $OUT/*-readme.log" >&2; status=1; }
exit "${status:-0}"
