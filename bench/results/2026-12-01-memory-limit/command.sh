target/debug/rerank serve --model /tmp/m3 --dtype f32 --threads 2 --port 8097 --max-length 8192
