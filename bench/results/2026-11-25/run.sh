#!/bin/bash
cd /work/main
B=/work/benchrun
lscpu > $B/lscpu.txt
echo "== ours start $(date)" 
$B/rerank bench --model /work/m3 --threads 2 -w seed-512x10 -w seed-1024x20 -w rag-50 --runs 3 --no-warmup --ceiling --dump /work/wl --json $B/ours.json
echo "== ref start $(date)"
/work/venv/bin/python bench/reference.py --model /work/m3 --workloads /work/wl --names seed-512x10 seed-1024x20 rag-50 --threads 2 --runs 3 --compare $B/ours.json --json $B/ref.json 2>&1 | grep -v -i "warn\|Loading weights"
echo "== ours 8k $(date)"
$B/rerank bench --model /work/m3 --threads 2 -w seed-8192x1 --runs 1 --no-warmup --dump /work/wl --json $B/ours8k.json
echo "== ref 8k $(date)"
/usr/bin/time -v /work/venv/bin/python bench/reference.py --model /work/m3 --workloads /work/wl --names seed-8192x1 --threads 2 --runs 1 --compare $B/ours8k.json --json $B/ref8k.json 2>&1 | grep -v -i "warn\|Loading weights" | grep -v "^\s" ; 
echo "== done $(date)"
