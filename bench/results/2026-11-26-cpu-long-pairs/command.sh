#!/usr/bin/env bash
# 2026-11-26 (second batch of that night, ~01:00-01:20 UTC), the 2-core development VM, f32, 2 threads.
# Before: cargo build --release; /work/m3 and /work/wl as in bench/cpu.sh.
R=target/release/rerank
PY=/work/venv/bin/python
M=/work/m3
WL=/work/wl
OUT=bench/results/2026-11-26-cpu-long-pairs
# seed-8192x1, right after the vectorized softmax exp: these two lines as BENCHMARKS.md recorded
# them (`rerank` = target/release/rerank, `python` = the venv's); the output was saved as
# f32-8k-b.{json,txt} and torch-8k-b.{json,txt}, the redirections themselves were not recorded.
rerank bench --model /work/m3 --threads 2 -w seed-8192x1 --runs 1 --no-warmup --json f32-8k-b.json
python bench/reference.py --model /work/m3 --workloads /work/wl --names seed-8192x1 --threads 2 --runs 1 --compare f32-8k-b.json
# seed-8192x5: the last two lines of that batch's script (a copy in the results folder, run from
# there; its other lines measured the earlier all-int8 variant, since removed).
$R bench --model $M --threads 2 -w seed-8192x5 --runs 1 --no-warmup --dump $WL --json $OUT/f32-8192x5.json 2>&1 | tee $OUT/f32-8192x5.txt
$PY bench/reference.py --model $M --workloads $WL --names seed-8192x5 --threads 2 --runs 1 --compare $OUT/f32-8192x5.json --json $OUT/torch-8192x5.json 2>&1 | tee $OUT/torch-8192x5.txt
