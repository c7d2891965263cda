#!/usr/bin/env bash
# A = 5d8272c (before the model-layer redesign), B = the redesign (issue 11), both release builds.
git worktree add /tmp/old 5d8272c && (cd /tmp/old && cargo build --release --bin rerank)
cargo build --release --bin rerank
target/release/rerank bench --synthetic --save /tmp/m3
MODEL=/tmp/m3 A=/tmp/old/target/release/rerank B=target/release/rerank \
    bash bench/ab.sh bench/results/2026-12-01-refactor-ab
