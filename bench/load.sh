#!/usr/bin/env bash
# Load time per dtype: the whole `rerank score` process on one pair (so nearly all of it is
# loading: mapping the weights, packing or quantizing them, int8's calibration pass), RUNS (5)
# runs per dtype after one warm-up, interleaved f32 bf16 int8 f32 …, median wall seconds and peak
# RSS from /usr/bin/time. With OLD=path/to/an/older/rerank it times that binary too, in the same
# rounds, and prints new ÷ old. bf16 and int8 run twice per round: converting the checkpoint
# (RERANK_PREPARED_CACHE=off; rows "bf16", "int8") and reading the prepared weights from a cache
# in OUT/prepared-new (OUT/prepared-old for OLD: two versions of the format would replace each
# other's entries) that the warm-up round fills (rows "bf16-cached", "int8-cached").
#
#   cargo build --release --bin rerank
#   bash bench/load.sh bench/results/$(date -u +%F)-load
#
# Environment: RERANK (default target/release/rerank), MODEL (default /tmp/m3; written with
# `rerank bench --synthetic --save` when missing), RUNS (5), DTYPES ("f32 bf16 int8"), OLD.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: bench/load.sh OUT}
R=${RERANK:-$root/target/release/rerank}
M=${MODEL:-/tmp/m3}
runs=${RUNS:-5}
dtypes=${DTYPES:-f32 bf16 int8}
mkdir -p "$out"
{ lscpu | grep 'Model name' || true; lscpu | grep -o 'avx512_vnni\|avx512_bf16\|amx_int8\|amx_bf16' | sort -u | tr '\n' ' '; echo; nproc; git -C "$root" rev-parse HEAD; date -u; } > "$out/machine.txt"
[ -f "$M/model.safetensors" ] || "$R" bench --synthetic --save "$M"
echo '{"query": "a query", "passage": "a passage"}' > "$out/one.jsonl"
bins=("new=$R")
[ -n "${OLD:-}" ] && bins+=("old=$OLD")
: > "$out/runs.tsv"
rm -rf "$out"/prepared-*
for round in $(seq 0 "$runs"); do
    for d in $dtypes; do
        variants=("$d=off")
        [ "$d" != f32 ] && variants+=("$d-cached=$out/prepared-")
        for v in "${variants[@]}"; do
            for b in "${bins[@]}"; do
                cache=${v#*=}
                [ "$cache" != off ] && cache+=${b%%=*}
                RERANK_PREPARED_CACHE=$cache /usr/bin/time -f "%e %M" -o "$out/t" "${b#*=}" score \
                    --model "$M" --dtype "$d" --input "$out/one.jsonl" > /dev/null
                # Round 0 is the warm-up.
                [ "$round" -gt 0 ] && echo "${b%%=*} ${v%%=*} $(cat "$out/t")" >> "$out/runs.tsv"
            done
        done
    done
done
ls -l "$out"/prepared-* > "$out/prepared.txt"
rm -rf "$out"/prepared-*
rm -f "$out/t"
python3 - "$out/runs.tsv" <<'PY' | tee "$out/result.txt"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for b, d in dict.fromkeys((r[0], r[1]) for r in rows):
    sel = [r for r in rows if r[0] == b and r[1] == d]
    med[b, d] = (statistics.median(float(r[2]) for r in sel), statistics.median(int(r[3]) for r in sel) / 1024)
print(f"{'binary':<6} {'dtype':<6} {'median wall s':>14} {'peak MiB':>9} {'new / old':>10}")
for (b, d), (wall, mib) in med.items():
    ratio = f"{wall / med['old', d][0]:.2f}" if b == "new" and ("old", d) in med else ""
    print(f"{b:<6} {d:<6} {wall:>14.2f} {mib:>9.0f} {ratio:>10}")
PY
