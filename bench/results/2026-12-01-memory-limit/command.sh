/work/main/target/release/rerank serve --model /tmp/m3-mem --dtype f32 --threads 2 --port 8097 --max-length 8192
