#!/usr/bin/env bash
# What the score cache (`rerank serve --cache-size`) buys on a workload with repeats: the same
# requests, in the same order, against the server with the cache off (--cache-size 0) and on
# (the default, 16384 pairs). Each request has DOCS passages and is, with probability REPEAT
# (0.5), an earlier request again (a retry, the next page, another agent asking the same), so
# about half the pairs repeat: bench/cache_load.py (stdlib only) sends them from CONCURRENCY clients and reports pairs/s;
# the cache's hits and misses come from /metrics.
#
#   cargo build --release --bin rerank
#   bash bench/cache.sh bench/results/$(date -u +%F)-cache
#
# Environment: RERANK (default target/release/rerank), MODEL (default /tmp/m3: a full-size
# random model from `rerank bench --synthetic --save /tmp/m3`; tests/fixtures/tiny to try the
# script), THREADS (2), PORT (8096), REQUESTS (60), DOCS (8), WORDS (120 per passage),
# REPEAT (0.5), CONCURRENCY (2), CACHES ("0 16384"), PYTHON (python3).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: bench/cache.sh OUT}
R=${RERANK:-$root/target/release/rerank}
M=${MODEL:-/tmp/m3}
port=${PORT:-8096}
url=http://127.0.0.1:$port
py=${PYTHON:-python3}
mkdir -p "$out"
{ lscpu | grep 'Model name' || true; nproc; git -C "$root" rev-parse HEAD; date -u; } > "$out/machine.txt"
: > "$out/command.sh"
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; true' EXIT
for cache in ${CACHES:-0 16384}; do
    cmd="$R serve --model $M --threads ${THREADS:-2} --port $port --cache-size $cache"
    echo "$cmd" >> "$out/command.sh"
    $cmd > "$out/serve-cache$cache.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do curl -sf "$url/ready" > /dev/null && break; sleep 0.2; done
    curl -sf "$url/ready" > /dev/null || { cat "$out/serve-cache$cache.log"; exit 1; }
    load="$py $root/bench/cache_load.py --url $url --requests ${REQUESTS:-60} --docs ${DOCS:-8} --words ${WORDS:-120} --repeat ${REPEAT:-0.5} --concurrency ${CONCURRENCY:-2} --seed 7"
    echo "$load" >> "$out/command.sh"
    $load > "$out/load-cache$cache.json"
    curl -sf "$url/metrics" | grep -E '^rerank_cache_|^rerank_model_busy_seconds_total' > "$out/metrics-cache$cache.txt"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
done
"$py" - "$out" ${CACHES:-0 16384} <<'PY'
import json, sys
out, caches = sys.argv[1], sys.argv[2:]
rows = []
for c in caches:
    load = json.load(open(f"{out}/load-cache{c}.json"))
    metrics = dict(l.split() for l in open(f"{out}/metrics-cache{c}.txt") if l.strip())
    rows.append((c, load, metrics))
base = rows[0][1]["pairs_per_s"]
print(f"repeated pairs: {rows[0][1]['repeated_share']:.0%}")
print("| --cache-size | pairs | wall s | pairs/s | speed-up | cache hits | misses | model busy s |")
print("|---|---|---|---|---|---|---|---|")
for c, load, m in rows:
    print(f"| {c} | {load['pairs']} | {load['wall_s']:.2f} | {load['pairs_per_s']:.1f} | {load['pairs_per_s'] / base:.2f}x "
          f"| {m.get('rerank_cache_hits_total', '0')} | {m.get('rerank_cache_misses_total', '0')} | {float(m['rerank_model_busy_seconds_total']):.2f} |")
PY
