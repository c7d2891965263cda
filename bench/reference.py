"""PyTorch reference for `rerank bench`: sentence-transformers CrossEncoder.predict
(fp32 on CPU; --device cuda --fp16 for the GPU, as FlagEmbedding's use_fp16 does)
on the same model files and the same pairs, printing the same figures.

    rerank bench --synthetic --save /tmp/m3                       # model files
    rerank bench --model /tmp/m3 --dump /tmp/wl --json ours.json  # pairs + our scores
    python bench/reference.py --model /tmp/m3 --workloads /tmp/wl --threads 2 --compare ours.json

Timed: predict() alone (tokenization + forward + sigmoid), median of --runs after one warm-up.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time


def flops(cfg, n):
    h, i, l = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    return 2.0 * (4 * h * h + 2 * h * i) * l * n + 4.0 * n * n * h * l


def peak_rss_gib():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--workloads", required=True, help="directory of NAME.jsonl written by `rerank bench --dump`")
    ap.add_argument("--names", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=8192)
    ap.add_argument("--compare", help="JSON written by `rerank bench --json`: report max |score - reference|")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--fp16", action="store_true", help="model.half(), as FlagEmbedding's use_fp16")
    args = ap.parse_args()

    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = CrossEncoder(args.model, max_length=args.max_length, device=args.device)
    if args.fp16:
        model.model.half()
    model.model.eval()
    cuda = args.device.startswith("cuda")
    load_s = time.perf_counter() - t0
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    ours = {}
    if args.compare:
        for r in json.load(open(args.compare))["results"]:
            ours[r["workload"]] = r
    names = args.names or sorted(f[:-6] for f in os.listdir(args.workloads) if f.endswith(".jsonl"))
    print(f"reference: sentence-transformers CrossEncoder.predict, torch {torch.__version__}, "
          f"{'fp16' if args.fp16 else 'fp32'} on {args.device}, threads {torch.get_num_threads()}, batch_size {args.batch_size}, load {load_s:.2f} s")
    print(f"{'workload':<14} {'pairs':>6} {'tokens':>8} {'median s':>10} {'pairs/s':>9} {'tokens/s':>10} "
          f"{'GFLOP/s':>9} {'peak GiB':>9} {'max|Δscore|':>12}")
    results = []
    for name in names:
        pairs = [json.loads(line) for line in open(os.path.join(args.workloads, name + ".jsonl")) if line.strip()]
        pairs = [(p["query"], p["passage"]) for p in pairs]
        enc = model.tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation=True, max_length=args.max_length)
        lens = [len(x) for x in enc["input_ids"]]
        total_flops = sum(flops(cfg, n) for n in lens)
        model.predict(pairs[:1], batch_size=args.batch_size, show_progress_bar=False)  # warm-up
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times, scores = [], None
        for _ in range(args.runs):
            t = time.perf_counter()
            scores = model.predict(pairs, batch_size=args.batch_size, show_progress_bar=False)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        # GPU: peak memory PyTorch allocated for tensors (the process's total, CUDA
        # context included, is what nvidia-smi shows: bench/gpu.sh samples that).
        peak = torch.cuda.max_memory_allocated() / (1 << 30) if cuda else peak_rss_gib()
        diff = ""
        if name in ours:
            diff_v = max(abs(float(a) - float(b)) for a, b in zip(ours[name]["scores"], scores))
            diff = f"{diff_v:.2e}"
        print(f"{name:<14} {len(pairs):>6} {sum(lens):>8} {med:>10.3f} {len(pairs)/med:>9.2f} "
              f"{sum(lens)/med:>10.0f} {total_flops/med/1e9:>9.1f} {peak:>9.2f} {diff:>12}")
        if name in ours:
            r = ours[name]
            print(f"{'':<14} rerank: {r['median_s']:.3f} s -> speed-up {med / r['median_s']:.2f}x")
        results.append({"workload": name, "tokens": sum(lens), "runs_s": times, "median_s": med,
                        "scores": [float(s) for s in scores]})
        sys.stdout.flush()
    if args.json:
        json.dump({"load_s": load_s, "results": results}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
