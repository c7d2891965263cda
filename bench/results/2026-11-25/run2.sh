#!/bin/bash
cd /work/main
B=/work/benchrun
echo "== ref 8k $(date)"
/work/venv/bin/python bench/reference.py --model /work/m3 --workloads /work/wl --names seed-8192x1 --threads 2 --runs 1 --compare /tmp/flash1.json 2>&1 | grep -v -i "warn\|Loading weights"
echo "== ours 1024 $(date)"
$B/rerank-flash bench --model /work/m3 --threads 2 -w seed-1024x20 --runs 1 --no-warmup
echo "== done $(date)"
