"""The load of bench/cache.sh: REQUESTS Cohere-style /v1/rerank requests of DOCS passages from
CONCURRENCY clients; each request is, with probability REPEAT, an earlier one again (all its
pairs repeated), else new. The request list is drawn up front from --seed, so every run sends the
same requests in the same order. Prints JSON: pairs, wall_s, pairs_per_s, repeated_pairs."""

import argparse
import concurrent.futures
import json
import random
import time
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--docs", type=int, default=8)
    ap.add_argument("--words", type=int, default=120)
    ap.add_argument("--repeat", type=float, default=0.5)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    vocab = [f"w{i}" for i in range(5000)]
    # A request is, with probability REPEAT, an earlier one again, its passages in another
    # order (a retry, the next page, another agent asking the same): all its pairs repeat.
    requests, bodies, repeated = [], [], 0
    for r in range(args.requests):
        if requests and rng.random() < args.repeat:
            query, docs = rng.choice(requests)
            docs = rng.sample(docs, len(docs))
            repeated += len(docs)
        else:
            query = f"question {r}: " + " ".join(rng.choices(vocab, k=12))
            docs = [" ".join(rng.choices(vocab, k=args.words)) for _ in range(args.docs)]
            requests.append((query, docs))
        bodies.append(json.dumps({"query": query, "documents": docs}).encode())

    def send(body):
        req = urllib.request.Request(
            args.url + "/v1/rerank", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=600) as r:
            assert r.status == 200, r.status
            r.read()

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(send, bodies))
    wall = time.perf_counter() - start
    pairs = args.requests * args.docs
    print(json.dumps({"pairs": pairs, "repeated_pairs": repeated, "repeated_share": repeated / pairs,
                      "wall_s": wall, "pairs_per_s": pairs / wall}))


if __name__ == "__main__":
    main()
