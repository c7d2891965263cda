# /work/rerank-old: a release build of 4e59938 (bf16 not cached by default);
# target/release/rerank: this change (bf16 cached like int8). Same machine, one run of the script.
OLD=/work/rerank-old MODEL=/work/m3 RUNS=5 DTYPES="f32 bf16" bash bench/load.sh bench/results/2026-12-05-load-bf16
