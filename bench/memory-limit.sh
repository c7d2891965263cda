#!/usr/bin/env bash
# `rerank serve` under a real memory limit: the full-size random-weight model (bge-reranker-v2-m3's
# shapes, f32) in a cgroup limited to LIMIT (3G), no --memory-limit flag, so the server must find
# the cgroup's limit itself and derive its pass and queue budgets from it; then a burst of
# BURST (4) concurrent requests of DOCS (2) passages of 8192 tokens each. It passes when every
# request is answered (200 with 8192 tokens per pair, or 429 when the queue is full), the server
# is alive and healthy after, and the cgroup recorded no OOM kill. Prints the derived plan, the
# cgroup's peak memory and the answers.
#
#   cargo build --release --bin rerank
#   bash bench/memory-limit.sh bench/results/$(date -u +%F)-memory-limit
#
# The cgroup: a child of this shell's own (cgroup v2 memory.max, else v1 memory.limit_in_bytes;
# needs root or a delegated cgroup), else `systemd-run --user --scope -p MemoryMax=LIMIT`.
# Environment: RERANK (default target/release/rerank), MODEL (default /tmp/m3; written with
# `rerank bench --synthetic --save` when missing), LIMIT (3G), THREADS (2), PORT (8097),
# BURST (4), DOCS (2), PYTHON (python3).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: bench/memory-limit.sh OUT}
R=${RERANK:-$root/target/release/rerank}
M=${MODEL:-/tmp/m3}
limit=${LIMIT:-3G}
port=${PORT:-8097}
url=http://127.0.0.1:$port
py=${PYTHON:-python3}
mkdir -p "$out"
{ lscpu | grep 'Model name' || true; nproc; git -C "$root" rev-parse HEAD; date -u; } > "$out/machine.txt"
[ -f "$M/model.safetensors" ] || "$R" bench --synthetic --save "$M"
bytes=$("$py" -c "import sys; s=sys.argv[1].upper().rstrip('IB'); print(int(float(s[:-1]) * 1024 ** ' KMGT'.index(s[-1])) if s[-1] in 'KMGT' else int(s))" "$limit")

# A cgroup of our own under this shell's.
cg= ; kind=
own_v2=$(sed -n 's/^0:://p' /proc/self/cgroup)
own_v1=$(sed -n 's/^[0-9]*:\([^:]*,\)\{0,1\}memory\(,[^:]*\)\{0,1\}:\(.*\)/\3/p' /proc/self/cgroup)
if [ -f /sys/fs/cgroup/cgroup.controllers ] && mkdir -p "/sys/fs/cgroup$own_v2/rerank-mem-$$" 2>/dev/null; then
    cg=/sys/fs/cgroup$own_v2/rerank-mem-$$; kind=v2
    echo "$bytes" > "$cg/memory.max"; echo 0 > "$cg/memory.swap.max" 2>/dev/null || true
elif [ -n "$own_v1" ] && mkdir -p "/sys/fs/cgroup/memory$own_v1/rerank-mem-$$" 2>/dev/null; then
    cg=/sys/fs/cgroup/memory$own_v1/rerank-mem-$$; kind=v1
    echo "$bytes" > "$cg/memory.limit_in_bytes"
    echo "$bytes" > "$cg/memory.memsw.limit_in_bytes" 2>/dev/null || true
fi
# Pages of the weights already in the page cache are charged to whichever cgroup read them
# first, not to ours: drop them (clean pages, reread from disk), so the server's cgroup pays for
# every weight page it touches.
"$py" -c "import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)" "$M/model.safetensors"
cmd="$R serve --model $M --dtype f32 --threads ${THREADS:-2} --port $port --max-length 8192"
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    [ -n "$cg" ] && rmdir "$cg" 2>/dev/null
    true
}
trap cleanup EXIT
if [ -n "$cg" ]; then
    echo "cgroup $kind $cg, limit $limit ($bytes bytes)" | tee "$out/cgroup.txt"
    sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$cg" $cmd > "$out/serve.log" 2>&1 &
elif command -v systemd-run >/dev/null && systemd-run --user --scope -p MemoryMax="$limit" true 2>/dev/null; then
    echo "systemd-run --user --scope -p MemoryMax=$limit" | tee "$out/cgroup.txt"
    systemd-run --user --scope -p MemoryMax="$limit" $cmd > "$out/serve.log" 2>&1 &
else
    echo "no cgroup could be made here (not root, no delegation, no systemd user instance)" >&2
    exit 2
fi
pid=$!
echo "$cmd" > "$out/command.sh"
for _ in $(seq 1200); do curl -sf "$url/ready" > /dev/null && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
cat "$out/serve.log"
curl -sf "$url/ready" > /dev/null || { echo "FAIL: the server did not start"; exit 1; }
curl -sf "$url/info" > "$out/info.json"

"$py" - "$url" "${BURST:-4}" "${DOCS:-2}" > "$out/burst.json" <<'PY'
import concurrent.futures, json, sys, time, urllib.error, urllib.request
url, burst, docs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# ~3 tokens a word here: far over 8192 tokens, cut to exactly 8192 with the query.
text = lambda i: " ".join(f"passage{i} word{j % 997}" for j in range(6000))
def send(r):
    body = json.dumps({"query": f"burst query {r}", "documents": [text(r * docs + d) for d in range(docs)]}).encode()
    req = urllib.request.Request(url + "/v1/rerank", data=body, headers={"Content-Type": "application/json"})
    start = time.time()
    try:
        with urllib.request.urlopen(req, timeout=3600) as a:
            answer = json.loads(a.read())
            return {"status": a.status, "s": round(time.time() - start, 1), "tokens": answer["usage"]["total_tokens"]}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "s": round(time.time() - start, 1), "error": json.loads(e.read())["error"]}
    except Exception as e:
        return {"status": None, "s": round(time.time() - start, 1), "error": repr(e)}
with concurrent.futures.ThreadPoolExecutor(burst) as pool:
    print(json.dumps(list(pool.map(send, range(burst)))))
PY
cat "$out/burst.json"
alive=no; kill -0 "$pid" 2>/dev/null && alive=yes
health=$(curl -s -o /dev/null -w '%{http_code}' "$url/health" || true)
{
    echo "alive after the burst: $alive; /health: $health"
    if [ "$kind" = v2 ]; then
        echo "peak: $(cat "$cg/memory.peak" 2>/dev/null || echo n/a) bytes"; grep -E 'oom|max' "$cg/memory.events"
    elif [ "$kind" = v1 ]; then
        echo "peak: $(cat "$cg/memory.max_usage_in_bytes") bytes; failcnt $(cat "$cg/memory.failcnt")"; cat "$cg/memory.oom_control"
    fi
    curl -s "$url/metrics" | grep -E '^rerank_(batch_pairs|batch_padded_tokens)_(sum|count)|^rerank_requests_total'
} | tee "$out/result.txt"
"$py" - "$out/burst.json" "$alive" "$health" "$kind" "$out/result.txt" <<'PY'
import json, sys
answers, alive, health, kind, result = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4], open(sys.argv[5]).read()
ok = all(a["status"] == 429 or (a["status"] == 200 and a["tokens"] % 8192 == 0) for a in answers)
killed = ("oom_kill " in result and "oom_kill 0" not in result)
verdict = ok and alive == "yes" and health == "200" and not killed
print(("PASS" if verdict else "FAIL") + f": answers {[a['status'] for a in answers]}, alive {alive}, /health {health}, oom kill {'yes' if killed else 'no'}")
sys.exit(0 if verdict else 1)
PY
