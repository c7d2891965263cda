import json, sys, torch
torch.set_num_threads(2)
from sentence_transformers import CrossEncoder
m = CrossEncoder('/work/m3', device='cpu', max_length=8192)
pairs = [(d['query'], d['passage']) for d in map(json.loads, open('/work/wl/seed-8192x1.jsonl'))]
m.predict(pairs, batch_size=16)
