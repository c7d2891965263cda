#!/bin/bash
# device-side: the HTTP service on the GPU (the model runs on the server's worker thread)
cd "$(dirname "$0")/.."
xz -dc .gpu/rerank.xz > /tmp/rerank && chmod +x /tmp/rerank
libdirs=$(find /usr/local/cuda* /opt/torch/.venv \( -name 'libcublas.so.13' -o -name 'libcublasLt.so.13' -o -name 'libnvrtc.so.13' -o -name 'libcurand.so.10' -o -name 'libcudart.so.13' \) 2>/dev/null | grep -v compat | xargs -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$libdirs${LD_LIBRARY_PATH:-}
/tmp/rerank serve --model tests/fixtures/tiny --device cuda --port 8099 > $OUT/serve.log 2>&1 &
for i in $(seq 100); do curl -sf localhost:8099/health >/dev/null && break; sleep 0.2; done
J='content-type: application/json'
{
echo "== info"; curl -s localhost:8099/info; echo
echo "== TEI /rerank"; curl -s -X POST localhost:8099/rerank -H "$J" -d '{"query":"中国的首都是哪里？","texts":["北京是中国的政治中心和首都。","华盛顿是美国的首都。"]}'; echo
echo "== Cohere /v1/rerank"; curl -s -X POST localhost:8099/v1/rerank -H "$J" -d '{"query":"q","documents":["a b","c d","e f"],"top_n":2}'; echo
echo "== 32 concurrent"; for i in $(seq 32); do curl -s -o /dev/null -w "%{http_code} " -X POST localhost:8099/rerank -H "$J" -d "{\"query\":\"query $i\",\"texts\":[\"a b c $i\",\"d e f\",\"g h\"]}" & done; wait; echo
echo "== bad JSON"; curl -s -X POST localhost:8099/rerank -H "$J" -d '{"query":'; echo
echo "== still serving"; curl -s -X POST localhost:8099/rerank -H "$J" -d '{"query":"q","texts":["a"]}'; echo
echo "== metrics"; curl -s localhost:8099/metrics | grep -E "^rerank_(requests|pairs)" | head -8
} 2>&1 | tee $OUT/client.log
kill %1; wait
