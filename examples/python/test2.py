# The deployment guide's test2.py with one change: the import (rerank instead of
# sentence_transformers). Usage: python examples/python/test2.py [MODEL] [DEVICE]
# (default BAAI/bge-reranker-v2-m3 on cpu; e.g. tests/fixtures/tiny, or cuda
# with a CUDA build).
import sys
import time

from rerank import CrossEncoder

model_name = sys.argv[1] if len(sys.argv) > 1 else "BAAI/bge-reranker-v2-m3"
device = sys.argv[2] if len(sys.argv) > 2 else "cpu"

model = CrossEncoder(model_name, max_length=8192, device=device)

query = "中国的首都是哪里？"
passages = [
    "北京是中国的政治中心和首都。",
    "上海是中国最大的城市，经济发达。",
    "首都机场位于北京，是中国重要交通枢纽。",
    "杭州有西湖，是著名的旅游城市。",
    "首都医科大学位于北京市丰台区。",
]

start = time.time()
scores = model.predict([(query, p) for p in passages], batch_size=16)
print(f"耗时: {time.time() - start:.2f}s")

ranked = sorted(zip(scores, passages), reverse=True)
for i, (score, passage) in enumerate(ranked, 1):
    bar = "█" * int(round(score * 20))
    print(f"{i}. [{score:.4f}] {bar:<20} {passage}")
