target/release/rerank serve --model /work/m3 --dtype int8 --threads 2 --port 8095 --max-pass-time 0.5 --cache-size 0
/work/main/target/release/examples/loadgen --url http://127.0.0.1:8095 --concurrency 4 --docs 16 --words 50,150 --duration 45 --warmup 5 --request-timeout-s 300 --json
/work/main/target/release/examples/loadgen --url http://127.0.0.1:8095 --scenario fairness --duration 45 --big-docs 50 --request-timeout-s 300 --json
