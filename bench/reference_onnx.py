"""ONNX Runtime int8 reference for `rerank bench --dtype int8`: the fastest thing
users run on CPU today (fastembed, optimum), on the same model files and pairs.

    rerank bench --synthetic --save /tmp/m3                                   # model files
    rerank bench --model /tmp/m3 --dtype int8 --dump /tmp/wl --json int8.json # pairs + our scores
    python bench/reference_onnx.py --model /tmp/m3 --onnx /tmp/m3-onnx --workloads /tmp/wl \
        --threads 2 --compare int8.json

The model is exported once with torch.onnx.export (fp32, dynamic batch and length,
weights as external data since they pass protobuf's 2 GB), then quantized with
onnxruntime.quantization.quantize_dynamic (int8 weights, u8 activations quantized on
the fly; the library's defaults, per-tensor, as optimum and fastembed ship it;
--per-channel for per-channel weights). Both files are kept in --onnx and reused.

Timed: tokenization + session.run + sigmoid for all pairs, in input order, batches of
--batch-size padded to their longest (how fastembed's TextCrossEncoder runs), median
of --runs after one warm-up. Requirements: bench/requirements-onnx.txt.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

# The same FLOP count and RSS figure as the PyTorch reference (this script's directory is on sys.path).
from reference import flops, peak_rss_gib


def export(model_dir, out_dir, per_channel):
    """fp32 ONNX export, then dynamic int8 quantization; returns the int8 file."""
    fp32 = os.path.join(out_dir, "model.onnx")
    int8 = os.path.join(out_dir, "model-int8-pc.onnx" if per_channel else "model-int8.onnx")
    if os.path.exists(int8):
        return int8
    os.makedirs(out_dir, exist_ok=True)
    if not os.path.exists(fp32):
        import torch
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(model_dir, torch_dtype=torch.float32)
        model.eval()
        ids = torch.tensor([[0, 5, 6, 7, 2, 2, 8, 9, 2]])
        mask = torch.ones_like(ids)
        # token_type_ids passed explicitly: the model's own buffer would be traced at the dummy length.
        types = torch.zeros_like(ids)
        t = time.perf_counter()
        with torch.no_grad():
            torch.onnx.export(
                model,
                (ids, mask, types),
                fp32,
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["logits"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "seq"},
                    "attention_mask": {0: "batch", 1: "seq"},
                    "token_type_ids": {0: "batch", 1: "seq"},
                    "logits": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        print(f"exported {fp32} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    t = time.perf_counter()
    quantize_dynamic(
        fp32,
        int8,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        use_external_data_format=True,
    )
    print(f"quantized {int8} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return int8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--onnx", required=True, help="directory for the exported and quantized files (reused)")
    ap.add_argument("--workloads", required=True, help="directory of NAME.jsonl written by `rerank bench --dump`")
    ap.add_argument("--names", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=8192)
    ap.add_argument("--per-channel", action="store_true")
    ap.add_argument("--compare", nargs="*", default=[], help="JSON files written by `rerank bench --json`: report max |score - theirs|")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()

    import onnxruntime as ort
    from tokenizers import Tokenizer

    path = export(args.model, args.onnx, args.per_channel)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    t0 = time.perf_counter()
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tok.enable_truncation(args.max_length, strategy="longest_first")
    tok.no_padding()
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    pad = cfg.get("pad_token_id", 1)
    theirs = []
    for f in args.compare:
        doc = json.load(open(f))
        theirs.append((f"{os.path.basename(f)} ({doc.get('dtype', '?')})", {r["workload"]: r for r in doc["results"]}))

    def predict(pairs):
        out = []
        for b in range(0, len(pairs), args.batch_size):
            enc = tok.encode_batch(pairs[b : b + args.batch_size])
            longest = max(len(e.ids) for e in enc)
            ids = np.full((len(enc), longest), pad, dtype=np.int64)
            mask = np.zeros((len(enc), longest), dtype=np.int64)
            for r, e in enumerate(enc):
                ids[r, : len(e.ids)] = e.ids
                mask[r, : len(e.ids)] = 1
            logits = session.run(["logits"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0][:, 0]
            out.extend((1.0 / (1.0 + np.exp(-logits))).tolist())
        return out

    names = args.names or sorted(f[:-6] for f in os.listdir(args.workloads) if f.endswith(".jsonl"))
    print(f"reference: onnxruntime {ort.__version__} int8 (quantize_dynamic, "
          f"{'per-channel' if args.per_channel else 'per-tensor'}), threads {args.threads}, "
          f"batch_size {args.batch_size}, input order, padded batches, load {load_s:.2f} s")
    print(f"{'workload':<14} {'pairs':>6} {'tokens':>8} {'median s':>10} {'pairs/s':>9} {'tokens/s':>10} "
          f"{'GFLOP/s':>9} {'peak GiB':>9}")
    results = []
    for name in names:
        rows = [json.loads(line) for line in open(os.path.join(args.workloads, name + ".jsonl")) if line.strip()]
        pairs = [(p["query"], p["passage"]) for p in rows]
        lens = [len(e.ids) for e in tok.encode_batch(pairs)]
        total_flops = sum(flops(cfg, n) for n in lens)
        predict(pairs[:1])  # warm-up
        times, scores = [], None
        for _ in range(args.runs):
            t = time.perf_counter()
            scores = predict(pairs)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(f"{name:<14} {len(pairs):>6} {sum(lens):>8} {med:>10.3f} {len(pairs)/med:>9.2f} "
              f"{sum(lens)/med:>10.0f} {total_flops/med/1e9:>9.1f} {peak_rss_gib():>9.2f}")
        for label, by_name in theirs:
            if name in by_name:
                r = by_name[name]
                diff = max(abs(float(a) - float(b)) for a, b in zip(r["scores"], scores))
                print(f"{'':<14} {label}: {r['median_s']:.3f} s -> {med / r['median_s']:.2f}x onnxruntime's speed; "
                      f"max |score - onnxruntime| {diff:.2e}")
        results.append({"workload": name, "tokens": sum(lens), "runs_s": times, "median_s": med, "scores": scores})
        sys.stdout.flush()
    if args.json:
        json.dump({"load_s": load_s, "results": results}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
