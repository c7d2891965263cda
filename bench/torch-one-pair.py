# One short (~70-token) pair at a time, f32, 2 threads: sentence-transformers, then the
# same pairs through `rerank score --batch-size 1` (timed by the shell, load included).
#   /work/venv/bin/python bench/torch-one-pair.py   (writes /tmp/short.jsonl; model in /work/m3)
#   time ./target/release/rerank score --model /work/m3 --threads 2 --batch-size 1 --input /tmp/short.jsonl
import json, time, torch
q = 'what is the capital of china and why is it important for the economy'
p = ' '.join(['Beijing is the capital of China and a major economic center of the country'] * 3)
with open('/tmp/short.jsonl', 'w') as f:
    for i in range(20):
        print(json.dumps({'query': q, 'passage': p + str(i)}), file=f)
torch.set_num_threads(2)
from sentence_transformers import CrossEncoder
m = CrossEncoder('/work/m3', device='cpu')
pairs = [(d['query'], d['passage']) for d in map(json.loads, open('/tmp/short.jsonl'))]
m.predict(pairs[:1])
t = time.perf_counter()
for pair in pairs:
    m.predict([pair], batch_size=1)
print('torch per pair', (time.perf_counter() - t) / len(pairs))
