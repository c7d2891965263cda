"""On demand: rerank's Python package against sentence-transformers and FlagEmbedding
themselves, on the same model and pairs (they need PyTorch: a venv with
tests/fixtures/requirements.txt, plus `pip install FlagEmbedding` for its part,
plus this package, e.g. `pip install ./python`).

    python bench/python_compare.py tests/fixtures/tiny
    rerank bench --synthetic --save /tmp/m3 && python bench/python_compare.py /tmp/m3 --max-length 512

Prints the largest |ours - theirs| of CrossEncoder.predict (sigmoid scores), of
CrossEncoder.rank and of FlagReranker.compute_score (raw logits and normalize=True),
and the time of one predict call each (after a warm-up). Exits 1 above --tolerance.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def pairs_of_fixtures():
    golden = json.loads((ROOT / "tests" / "fixtures" / "golden.json").read_text())
    pairs = [(c["query"], c["passage"]) for c in golden]
    pairs += [("中国的首都是哪里？", p) for p in [
        "北京是中国的政治中心和首都。", "上海是中国最大的城市，经济发达。",
        "首都机场位于北京，是中国重要交通枢纽。", "杭州有西湖，是著名的旅游城市。",
        "首都医科大学位于北京市丰台区。"]]
    pairs += [("人工智能的发展趋势", p) for p in [
        "机器学习是人工智能的一个分支。", "苹果是一种水果，富含维生素C。", "深度神经网络推动了AI技术进步。"]]
    return pairs


def timed(fn):
    fn()
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import torch
    import rerank
    from sentence_transformers import CrossEncoder as STCrossEncoder

    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = pairs_of_fixtures()
    failed = False

    ours = rerank.CrossEncoder(args.model, max_length=args.max_length, threads=args.threads)
    theirs = STCrossEncoder(args.model, max_length=args.max_length or ours.max_length, device="cpu")
    a, t_ours = timed(lambda: ours.predict(pairs, batch_size=16))
    b, t_theirs = timed(lambda: theirs.predict(pairs, batch_size=16))
    assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
    diff = float(np.max(np.abs(a - b)))
    one_a, one_b = ours.predict(pairs[0]), theirs.predict(pairs[0])
    assert type(one_a) is type(one_b), (type(one_a), type(one_b))
    print(f"CrossEncoder.predict, {len(pairs)} pairs: max |ours - sentence-transformers| = {diff:.3g} "
          f"(ours {t_ours * 1e3:.1f} ms, sentence-transformers {t_theirs * 1e3:.1f} ms)")
    failed |= diff > args.tolerance

    docs = [p for q, p in pairs[-8:-3]]
    ra, rb = ours.rank(pairs[-8][0], docs, return_documents=True), theirs.rank(pairs[-8][0], docs, return_documents=True)
    same = [r["corpus_id"] for r in ra] == [r["corpus_id"] for r in rb] and all(set(x) == set(y) for x, y in zip(ra, rb))
    rdiff = max(abs(x["score"] - y["score"]) for x, y in zip(ra, rb))
    print(f"CrossEncoder.rank: same order and keys: {same}, max score difference {rdiff:.3g}")
    failed |= not same or rdiff > args.tolerance

    try:
        from FlagEmbedding import FlagReranker as FEFlagReranker
    except ImportError:
        print("FlagEmbedding not installed: FlagReranker not compared (pip install FlagEmbedding)")
    else:
        ml = args.max_length or min(512, ours.engine.model_max_length)
        fo, ft = rerank.FlagReranker(args.model, max_length=ml), FEFlagReranker(args.model, max_length=ml, devices="cpu")
        # FlagEmbedding 1.4 on transformers 5 (no prepare_for_model) decodes the
        # truncated ids and tokenizes the text again: where that round trip
        # changes the ids (unknown tokens, empty texts), it scores other tokens
        # than FlagEmbedding on transformers 4 does; compared apart.
        tok = ft.tokenizer

        def survives(text):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            back = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            return bool(ids) and tok(back, add_special_tokens=False)["input_ids"] == ids

        same_ids = np.array([survives(q) and survives(p) for q, p in pairs])
        for normalize in (False, True):
            x = np.array(fo.compute_score([list(p) for p in pairs], normalize=normalize))
            y = np.array(ft.compute_score([list(p) for p in pairs], normalize=normalize))
            d = np.abs(x - y)
            print(f"FlagReranker.compute_score(normalize={normalize}): max |ours - FlagEmbedding| = "
                  f"{float(d[same_ids].max()):.3g} on the {int(same_ids.sum())} pairs whose ids survive "
                  f"FlagEmbedding's decode/re-encode, {float(d.max()):.3g} on all {len(pairs)}")
            failed |= float(d[same_ids].max()) > args.tolerance
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
