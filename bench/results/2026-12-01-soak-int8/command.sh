/work/main/target/release/rerank serve --model /tmp/m3 --dtype int8 --threads 2 --port 8094  &
timeout 810 /work/main/target/release/examples/loadgen --url http://127.0.0.1:8094 --request-timeout-s 600 --scenario fairness --duration 90 --probe-paths /health\,/live\,/ready --json 
timeout 765 /work/main/target/release/examples/loadgen --url http://127.0.0.1:8094 --request-timeout-s 600 --scenario flood --concurrency 4 --flood-clients 0 --flood-interval-ms 0 --duration 45 --probe-paths /health\,/live\,/ready --json 
timeout 765 /work/main/target/release/examples/loadgen --url http://127.0.0.1:8094 --request-timeout-s 600 --scenario flood --concurrency 4 --flood-clients 32 --flood-interval-ms 10 --duration 45 --probe-paths /health\,/live\,/ready --json 
timeout 765 /work/main/target/release/examples/loadgen --url http://127.0.0.1:8094 --request-timeout-s 600 --scenario flood --concurrency 4 --flood-clients 32 --flood-interval-ms 0 --duration 45 --probe-paths /health\,/live\,/ready --json 
timeout 1320 /work/main/target/release/examples/loadgen --url http://127.0.0.1:8094 --request-timeout-s 600 --scenario soak --duration 600 --slice-s 30 --server-pid 4069 --json 
# in the background; then: wait for the server (watchdog kill -9 after 130 s)
timeout 735 /work/main/target/release/examples/loadgen --url http://127.0.0.1:8094 --request-timeout-s 600 --scenario drain --server-pid 4069 --signal-after 10 --after-signal 5 --json 
/work/main/target/release/rerank serve --model /tmp/m3 --dtype int8 --threads 2 --port 8094  &
# in the background; kill -9 the server after 10 s
timeout 733 /work/main/target/release/examples/loadgen --url http://127.0.0.1:8094 --request-timeout-s 600 --scenario flood --flood-clients 0 --concurrency 4 --warmup 0 --duration 13 --json 
kill -9 4555 
/work/main/target/release/rerank serve --model /tmp/m3 --dtype int8 --threads 2 --port 8094  &
