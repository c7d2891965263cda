#!/usr/bin/env bash
# Load and fault test of `rerank serve` on one machine, driven by `loadgen` (examples/loadgen.rs),
# in this order:
#   (a) start the server, time to the first 200 of /ready (/health where there is no /ready);
#   (b) fairness: big requests next to one-document requests and probes (FAIRNESS_SECONDS);
#   (c) flood: normal load with 0 probe clients, then FLOOD_CLIENTS probe clients each polling every
#       FLOOD_INTERVAL_MS (default 10), then FLOOD_CLIENTS in a tight loop (FLOOD_SECONDS each);
#   (d) soak: mixed load, varying concurrency, abandoned requests, server RSS (SOAK_SECONDS);
#   (e) drain: SIGTERM under load; the server's exit code and time to exit;
#   (f) restart, kill -9 under load, restart: time from the process start to /ready.
# Every phase is bounded (timeout on each command, a watchdog on each wait).
#
#   cargo build --release --bin rerank --example loadgen
#   bash bench/soak.sh bench/results/$(date -u +%F)-soak
#
# Environment: RERANK, LOADGEN (the binaries, default target/release/...), MODEL (default /tmp/m3,
# from `rerank bench --synthetic --save`), DTYPE (f32), THREADS (2), PORT (8094), SERVE_FLAGS (more
# `rerank serve` flags, e.g. "--request-timeout 120"), SOAK_SECONDS (600), FAIRNESS_SECONDS (120),
# FLOOD_SECONDS (60), FLOOD_CLIENTS (32), FLOOD_CONCURRENCY (4), FLOOD_INTERVAL_MS (10), SLICE_SECONDS (30, soak's
# concurrency slice), DRAIN_SIGNAL_AFTER (10), DRAIN_AFTER_SIGNAL (5), DRAIN_WAIT (120, most
# seconds the server may take to exit), KILL_AFTER (10), READY_TIMEOUT (600), PROBE_PATHS (default:
# those of /health,/live,/ready that the server has), REQUEST_TIMEOUT (600, loadgen's client-side
# limit per request), LOADGEN_FLAGS (added to every loadgen run), FAIRNESS_FLAGS, FLOOD_FLAGS,
# SOAK_FLAGS, DRAIN_FLAGS (added to that phase's run, e.g. FAIRNESS_FLAGS="--big-docs 20" or
# SOAK_FLAGS="--soak-docs 4,16,64 --words 20,200" where full-size requests are too slow).
# A loadgen run stops sending after its duration and then waits for the requests in flight (at
# most REQUEST_TIMEOUT s each), so each run's bound is its duration + REQUEST_TIMEOUT + 120 s.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: bench/soak.sh OUT}
R=${RERANK:-$root/target/release/rerank}
L=${LOADGEN:-$root/target/release/examples/loadgen}
M=${MODEL:-/tmp/m3}
DT=${DTYPE:-f32}
T=${THREADS:-2}
port=${PORT:-8094}
SOAK=${SOAK_SECONDS:-600}
FAIR=${FAIRNESS_SECONDS:-120}
FLOOD=${FLOOD_SECONDS:-60}
FLOOD_N=${FLOOD_CLIENTS:-32}
FLOOD_C=${FLOOD_CONCURRENCY:-4}
FLOOD_MS=${FLOOD_INTERVAL_MS:-10}
SLICE=${SLICE_SECONDS:-30}
DRAIN_AT=${DRAIN_SIGNAL_AFTER:-10}
DRAIN_POST=${DRAIN_AFTER_SIGNAL:-5}
DRAIN_WAIT=${DRAIN_WAIT:-120}
KILL_AT=${KILL_AFTER:-10}
READY_TIMEOUT=${READY_TIMEOUT:-600}
# The score cache off by default: loadgen repeats its texts, and cached pairs skip the model.
SERVE_FLAGS=${SERVE_FLAGS:---cache-size 0}
LOADGEN_FLAGS=${LOADGEN_FLAGS:-}
REQ_TIMEOUT=${REQUEST_TIMEOUT:-600}
FAIRNESS_FLAGS=${FAIRNESS_FLAGS:-}
FLOOD_FLAGS=${FLOOD_FLAGS:-}
SOAK_FLAGS=${SOAK_FLAGS:-}
DRAIN_FLAGS=${DRAIN_FLAGS:-}
url=http://127.0.0.1:$port
mkdir -p "$out"
out=$(cd "$out" && pwd)
: > "$out/command.sh"
: > "$out/summary.txt"
pid=

now() { date +%s.%N; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
say() { echo "$*" | tee -a "$out/summary.txt"; }
# record the exact command in command.sh
record() {
    local line
    printf -v line '%q ' "$@"
    echo "$line" >> "$out/command.sh"
}
record_bg() {
    local line
    printf -v line '%q ' "$@"
    echo "$line &" >> "$out/command.sh"
}
# run CMD... (bounded by its own timeout), recording it
run() {
    record "$@"
    "$@"
}
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url$1"; }

cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2> /dev/null; then kill -9 "$pid" 2> /dev/null; wait "$pid" 2> /dev/null; fi
}
trap cleanup EXIT

{
    lscpu | grep -m1 'Model name'
    echo "nproc: $(nproc)"
    echo "git: $(git -C "$root" rev-parse HEAD)"
    echo "date: $(date -u +%FT%TZ)"
    echo "rerank: $R"
    echo "model: $M, dtype $DT, threads $T, serve flags: $SERVE_FLAGS"
} > "$out/machine.txt"

# start_server NAME: starts the server in the background (pid in $pid), logs to serve-NAME.log
start_server() {
    local name=$1
    # shellcheck disable=SC2086
    record_bg "$R" serve --model "$M" --dtype "$DT" --threads "$T" --port "$port" $SERVE_FLAGS
    started=$(now)
    # shellcheck disable=SC2086
    "$R" serve --model "$M" --dtype "$DT" --threads "$T" --port "$port" $SERVE_FLAGS > "$out/serve-$name.log" 2>&1 &
    pid=$!
}

# wait_ready NAME: waits for /ready (or /health where /ready is 404) to answer 200; sets ready_s
ready_path=/ready
wait_ready() {
    local name=$1 code deadline
    deadline=$(awk -v s="$started" -v t="$READY_TIMEOUT" 'BEGIN { printf "%d", s + t }')
    ready_s=
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if ! kill -0 "$pid" 2> /dev/null; then
            wait "$pid"
            say "$name: server exited with $? before it was ready"
            return 1
        fi
        code=$(http_code "$ready_path")
        if [ "$code" = 404 ] && [ "$ready_path" = /ready ]; then
            ready_path=/health
            code=$(http_code "$ready_path")
        fi
        if [ "$code" = 200 ]; then
            ready_s=$(minus "$(now)" "$started")
            say "$name: $ready_path 200 after $ready_s s (pid $pid)"
            echo "$ready_s" > "$out/ready-$name.txt"
            return 0
        fi
        sleep 0.1
    done
    say "$name: not ready after $READY_TIMEOUT s"
    return 1
}

# stop_server NAME: SIGTERM and a bounded wait
stop_server() {
    local name=$1 rc
    kill -TERM "$pid" 2> /dev/null
    (sleep "$DRAIN_WAIT"; kill -9 "$pid" 2> /dev/null) &
    local wd=$!
    wait "$pid"
    rc=$?
    kill "$wd" 2> /dev/null
    wait "$wd" 2> /dev/null
    say "$name: server stopped, exit $rc"
    pid=
}

# alive PHASE: true when the server still runs; otherwise records its exit and restarts it
alive() {
    if kill -0 "$pid" 2> /dev/null; then return 0; fi
    wait "$pid"
    say "$1: SERVER DIED (exit $?), restarting"
    start_server "after-$1"
    wait_ready "after-$1"
    return 1
}

# lg SECONDS FLAGS...: a loadgen run of SECONDS (its timeout adds REQUEST_TIMEOUT + 120 s)
lg() {
    local t=$(($1 + REQ_TIMEOUT + 120))
    shift
    # shellcheck disable=SC2086
    run timeout "$t" "$L" --url "$url" --request-timeout-s "$REQ_TIMEOUT" $LOADGEN_FLAGS "$@"
}

# (a)
start_server first || exit 1
wait_ready first || exit 1
if [ -z "${PROBE_PATHS:-}" ]; then
    PROBE_PATHS=
    for p in /health /live /ready; do
        [ "$(http_code $p)" != 404 ] && PROBE_PATHS=${PROBE_PATHS:+$PROBE_PATHS,}$p
    done
fi
say "probe paths: $PROBE_PATHS; readiness: $ready_path"
curl -s --max-time 5 "$url/info" > "$out/info.json"

# (b)
# shellcheck disable=SC2086
lg "$FAIR" --scenario fairness --duration "$FAIR" --probe-paths "$PROBE_PATHS" $FAIRNESS_FLAGS --json \
    > "$out/fairness.json" 2> "$out/fairness.log"
say "fairness: loadgen exit $?"
alive fairness

# (c)
# 0 probe clients; FLOOD_CLIENTS each polling every FLOOD_INTERVAL_MS; FLOOD_CLIENTS in a tight loop
for run in 0:0 "$FLOOD_N:$FLOOD_MS" "$FLOOD_N:0"; do
    n=${run%%:*}
    ms=${run##*:}
    name=$n
    [ "$n" != 0 ] && name=$n-every-${ms}ms
    # shellcheck disable=SC2086
    lg "$FLOOD" --scenario flood --concurrency "$FLOOD_C" --flood-clients "$n" --flood-interval-ms "$ms" \
        --duration "$FLOOD" --probe-paths "$PROBE_PATHS" $FLOOD_FLAGS --json > "$out/flood-$name.json" 2> "$out/flood-$name.log"
    say "flood $name: loadgen exit $?"
    alive "flood-$name"
done

# (d)
# shellcheck disable=SC2086
lg "$SOAK" --scenario soak --duration "$SOAK" --slice-s "$SLICE" --server-pid "$pid" $SOAK_FLAGS --json \
    > "$out/soak.json" 2> "$out/soak.log"
say "soak: loadgen exit $?"
curl -s --max-time 5 "$url/metrics" > "$out/metrics-after-soak.txt"
alive soak

# (e) loadgen sends SIGTERM to the server after DRAIN_AT s; this shell waits for it (watchdog:
# kill -9 after DRAIN_AT + DRAIN_WAIT s)
echo "# in the background; then: wait for the server (watchdog kill -9 after $((DRAIN_AT + DRAIN_WAIT)) s)" >> "$out/command.sh"
# shellcheck disable=SC2086
lg $((DRAIN_AT + DRAIN_POST)) --scenario drain --server-pid "$pid" --signal-after "$DRAIN_AT" \
    --after-signal "$DRAIN_POST" $DRAIN_FLAGS --json > "$out/drain.json" 2> "$out/drain.log" &
lpid=$!
drain_start=$(now)
(sleep $((DRAIN_AT + DRAIN_WAIT)); kill -9 "$pid" 2> /dev/null) &
wd=$!
wait "$pid" 2> /dev/null
drain_rc=$?
drain_exit_s=$(minus "$(minus "$(now)" "$drain_start")" "$DRAIN_AT")
kill "$wd" 2> /dev/null
wait "$wd" 2> /dev/null
wait "$lpid"
say "drain: loadgen exit $?; server exit code $drain_rc (0 expected, 137: killed by the watchdog), exited ~$drain_exit_s s after SIGTERM"
echo "$drain_rc $drain_exit_s" > "$out/drain-exit.txt"
pid=

# (f)
start_server restart
wait_ready restart
echo "# in the background; kill -9 the server after $KILL_AT s" >> "$out/command.sh"
lg $((KILL_AT + 3)) --scenario flood --flood-clients 0 --concurrency "$FLOOD_C" --warmup 0 \
    --duration $((KILL_AT + 3)) --json > "$out/kill9-load.json" 2> "$out/kill9-load.log" &
lpid=$!
sleep "$KILL_AT"
record kill -9 "$pid"
kill -9 "$pid"
wait "$pid" 2> /dev/null
say "kill -9: server exit $? (137 expected)"
start_server after-kill9
wait_ready after-kill9
kill9_ready=$ready_s
wait "$lpid"
say "kill -9 load: loadgen exit $?"
stop_server after-kill9

# summary
python3 - "$out" "$FLOOD_N" "$FLOOD_MS" << 'EOF' | tee -a "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except Exception as e:
        print(f"{name}: unreadable ({e})")
        return None
def lat(s):
    f = lambda v: "-" if v is None else f"{v:.1f}"
    return f"p50 {f(s['p50_ms'])} p95 {f(s['p95_ms'])} p99 {f(s['p99_ms'])} max {f(s['max_ms'])} ms"
def errs(s):
    e = {k: v for k, v in s["statuses"].items() if not k.startswith("2")}
    e.update(s["conn_errors"])
    if s["timeouts"]: e["timeout"] = s["timeouts"]
    return e or "none"
print("== summary ==")
fa = load("fairness.json")
if fa:
    print(f"fairness: small (1 doc) {fa['small']['ok']} ok, {lat(fa['small'])}, errors {errs(fa['small'])}")
    print(f"          big ({fa['big_docs']} docs) {fa['big']['ok']} ok, {lat(fa['big'])}, errors {errs(fa['big'])}")
    for p, s in fa["probes"].items():
        print(f"          probe {p}: {s['sent']} sent, statuses {s['statuses']}, {lat(s)}")
for n in ("0", f"{sys.argv[2]}-every-{sys.argv[3]}ms", f"{sys.argv[2]}-every-0ms"):
    fl = load(f"flood-{n}.json")
    if fl:
        l, p = fl["load"], fl["probes"]
        print(f"flood {n:>2} probe clients: load {l['pairs_per_s']:.1f} pairs/s, {lat(l)}, errors {errs(l)}; "
              f"probes {p['requests_per_s']:.1f}/s, {lat(p)}")
so = load("soak.json")
if so:
    o = so["overall"]
    print(f"soak {so['seconds']:.0f} s: {o['ok']} ok of {o['sent']} sent ({o['abandoned']} abandoned), "
          f"{o['requests_per_s']:.2f} req/s, {o['pairs_per_s']:.1f} pairs/s, {lat(o)}, errors {errs(o)}")
    for b in sorted(so["buckets"], key=lambda b: int(b.split("-")[0].rstrip("+"))):
        s = so["buckets"][b]
        print(f"     {b:>6} docs: {s['ok']} ok, {lat(s)}, errors {errs(s)}")
    r = so.get("rss")
    if r:
        mb = lambda k: r[k] / 1024 if r[k] is not None else float("nan")
        print(f"     server rss MiB: start {mb('start_kb'):.1f} middle {mb('middle_kb'):.1f} end {mb('end_kb'):.1f} "
              f"min {mb('min_kb'):.1f} max {mb('max_kb'):.1f}")
dr = load("drain.json")
if dr:
    i, a = dr["in_flight_at_signal"], dr["after_signal"]
    print(f"drain: in flight at SIGTERM: {i['sent']} ({i['ok']} ok, errors {errs(i)}); "
          f"after: statuses {a['statuses']}, connection errors {a['conn_errors']}; "
          f"server exited {dr['server_exited_after_signal_s']} s after the signal")
for name in ("first", "restart", "after-kill9"):
    try:
        print(f"time to ready ({name}): {open(os.path.join(out, 'ready-' + name + '.txt')).read().strip()} s")
    except OSError:
        pass
EOF
say "drain exit code: $drain_rc; time to ready after kill -9: ${kill9_ready:-never} s"
