#!/usr/bin/env bash
# What the per-pass time cap (`rerank serve --max-pass-time`) costs in throughput and buys in
# latency for small requests: for each dtype, the server with the cap off (0) and on (default 1 s),
# on the full-size random-weight model, driven by `loadgen` on the same machine:
#   - throughput: 4 clients sending 16 documents of 50-150 words back to back (60 s after 5 s);
#     the figure that matters is the model's: real tokens per second of forward-pass time
#     (rerank_batch_tokens_sum / rerank_model_busy_seconds_total, from /metrics), which request
#     completions in a short window measure poorly when requests take tens of seconds;
#   - fairness: one client sending BIG_DOCS-document (default 100) requests (200-500 words each) next to one client
#     sending one-document requests and pollers of /health, /live, /ready every 100 ms (60 s).
#
#   cargo build --release --bin rerank --example loadgen
#   bash bench/pass-cap.sh bench/results/$(date -u +%F)-pass-cap
#
# Environment: RERANK, LOADGEN (binaries, default target/release/...), MODEL (default /tmp/m3),
# THREADS (2), PORT (8095), DTYPES ("f32 int8"), CAPS ("0 1"), SECONDS_EACH (60).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: bench/pass-cap.sh OUT}
R=${RERANK:-$root/target/release/rerank}
L=${LOADGEN:-$root/target/release/examples/loadgen}
M=${MODEL:-/tmp/m3}
T=${THREADS:-2}
port=${PORT:-8095}
S=${SECONDS_EACH:-60}
url=http://127.0.0.1:$port
mkdir -p "$out"
{ lscpu | grep 'Model name'; nproc; git -C "$root" rev-parse HEAD; date -u; } > "$out/machine.txt"
: > "$out/command.sh"
for dt in ${DTYPES:-f32 int8}; do
    for cap in ${CAPS:-0 1}; do
        name=$dt-cap$cap
        # The score cache off: loadgen repeats its texts, and a cached pair never reaches the
        # model (165 414 "one-document" answers in 45 s, p50 0 ms, with it on).
        echo "$R serve --model $M --dtype $dt --threads $T --port $port --max-pass-time $cap --cache-size 0" >> "$out/command.sh"
        $R serve --model "$M" --dtype "$dt" --threads "$T" --port "$port" --max-pass-time "$cap" --cache-size 0 > "$out/serve-$name.log" 2>&1 &
        pid=$!
        for _ in $(seq 600); do curl -sf "$url/ready" > /dev/null && break; sleep 0.2; done
        cmd1="$L --url $url --concurrency 4 --docs 16 --words 50,150 --duration $S --warmup 5 --request-timeout-s 300 --json"
        cmd2="$L --url $url --scenario fairness --duration $S --big-docs ${BIG_DOCS:-100} --request-timeout-s 300 --json"
        echo "$cmd1" >> "$out/command.sh"
        echo "$cmd2" >> "$out/command.sh"
        timeout $((S + 400)) $cmd1 > "$out/throughput-$name.json" 2> "$out/throughput-$name.log"
        timeout $((S + 400)) $cmd2 > "$out/fairness-$name.json" 2> "$out/fairness-$name.log"
        curl -s "$url/metrics" | grep -E '^rerank_(pass_token_cap|model_busy|inference_duration_seconds_(sum|count)|batch_tokens_(sum|count)|batch_padded_tokens_sum)' > "$out/metrics-$name.txt"
        kill "$pid"; wait "$pid"; echo "$name: server exit $?" >> "$out/exits.txt"
    done
done
python3 - "$out" << 'PY' | tee "$out/SUMMARY.txt"
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except Exception as e:
        return None
def metric(name, key):
    try:
        for line in open(os.path.join(out, f"metrics-{name}.txt")):
            k, v = line.split()
            if k == key:
                return float(v)
    except Exception:
        return None
for f in sorted(os.listdir(out)):
    if f.startswith("throughput-") and f.endswith(".json"):
        name = f[len("throughput-"):-5]
        t, fa = load(f), load(f"fairness-{name}.json")
        busy = metric(name, "rerank_model_busy_seconds_total")
        toks = metric(name, "rerank_batch_tokens_sum")
        passes = metric(name, "rerank_inference_duration_seconds_count")
        model = f"model {toks / busy:.1f} tokens per busy second over {passes:.0f} passes ({busy / passes:.2f} s per pass), cap now {metric(name, 'rerank_pass_token_cap'):.0f}" if busy and toks and passes else "no metrics"
        print(f"{name}: {model}")
        if t:
            print(f"    loadgen: {t['requests']} requests done in the window, {t['pairs_per_s']:.2f} pairs/s, p50 {t['p50_ms']:.0f} ms, errors {t['errors']}, 429s {t['overloaded']}")
        if fa:
            s = fa["small"]
            lat = lambda s: f"p50 {s['p50_ms']:.0f} p95 {s['p95_ms']:.0f} p99 {s['p99_ms']:.0f} max {s['max_ms']:.0f} ms" if s['ok'] else "none done"
            print(f"    small (1 doc) next to {fa['big_docs']}-doc requests: {s['ok']} ok, {lat(s)}; big {fa['big']['ok']} ok, {lat(fa['big'])}")
            for p, v in fa["probes"].items():
                print(f"    {p}: statuses {v['statuses']}, p50 {v['p50_ms']:.1f} p99 {v['p99_ms']:.1f} max {v['max_ms']:.1f} ms")
PY
