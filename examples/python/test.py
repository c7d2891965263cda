# The deployment guide's test.py with one change: the import (rerank instead of
# sentence_transformers). Usage: python examples/python/test.py [MODEL] [DEVICE]
# (default BAAI/bge-reranker-v2-m3 on cpu; e.g. tests/fixtures/tiny, or cuda
# with a CUDA build).
import sys

from rerank import CrossEncoder

model_name = sys.argv[1] if len(sys.argv) > 1 else "BAAI/bge-reranker-v2-m3"
device = sys.argv[2] if len(sys.argv) > 2 else "cpu"

model = CrossEncoder(model_name, max_length=8192, device=device)

query = "人工智能的发展趋势"
passages = [
    "机器学习是人工智能的一个分支。",
    "苹果是一种水果，富含维生素C。",
    "深度神经网络推动了AI技术进步。",
]

scores = model.predict([(query, p) for p in passages])
for score, passage in sorted(zip(scores, passages), reverse=True):
    print(f"[{score:.4f}] {passage}")
