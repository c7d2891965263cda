/work/main/target/release/rerank serve --model /work/m3 --threads 2 --port 8096 --cache-size 0
python3 /work/main/bench/cache_load.py --url http://127.0.0.1:8096 --requests 60 --docs 8 --words 120 --repeat 0.5 --concurrency 2 --seed 7
/work/main/target/release/rerank serve --model /work/m3 --threads 2 --port 8096 --cache-size 16384
python3 /work/main/bench/cache_load.py --url http://127.0.0.1:8096 --requests 60 --docs 8 --words 120 --repeat 0.5 --concurrency 2 --seed 7
