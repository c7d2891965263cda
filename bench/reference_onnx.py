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

--hidden-error (nothing timed): the fp32 graph with the last encoder layer's output
(the classifier's input, batch x len x hidden) as a second output, saved as
model-hidden.onnx next to model.onnx (its weights stay in model.onnx's external files)
and quantized as above; the same batches go through both, and per workload it prints
the max and mean relative L2 error ||h_int8 - h_fp32|| / ||h_fp32|| of the <s>
hidden state and max |sigmoid score difference|, plus the same for fp32 ONNX against
PyTorch (transformers, output_hidden_states) to show that the right tensor was taken.
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
    int8 = os.path.join(out_dir, "model-int8-pc.onnx" if per_channel else "model-int8.onnx")
    if not os.path.exists(int8):
        quantize(export_fp32(model_dir, out_dir), int8, per_channel)
    return int8


def export_fp32(model_dir, out_dir):
    """fp32 ONNX export (reused when present); returns the file."""
    fp32 = os.path.join(out_dir, "model.onnx")
    if os.path.exists(fp32):
        return fp32
    os.makedirs(out_dir, exist_ok=True)
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
    return fp32


def quantize(fp32, int8, per_channel):
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


def export_hidden(model_dir, out_dir, per_channel, hidden_size):
    """model.onnx with the classifier's input as a second output "last_hidden_state",
    and its int8 quantization; returns (fp32 file, int8 file)."""
    fp32 = os.path.join(out_dir, "model-hidden.onnx")
    int8 = os.path.join(out_dir, "model-hidden-int8-pc.onnx" if per_channel else "model-hidden-int8.onnx")
    if not os.path.exists(fp32):
        import onnx

        # Weights not loaded: the saved graph points at model.onnx's external files (same directory).
        m = onnx.load(export_fp32(model_dir, out_dir), load_external_data=False)
        # The classifier's first node takes token 0 of the last layer's output LayerNorm.
        gather = next(n for n in m.graph.node if n.op_type == "Gather" and n.name.startswith("/classifier/"))
        print(f"hidden state: {gather.input[0]}", file=sys.stderr)
        m.graph.node.append(onnx.helper.make_node("Identity", [gather.input[0]], ["last_hidden_state"]))
        m.graph.output.append(
            onnx.helper.make_tensor_value_info("last_hidden_state", onnx.TensorProto.FLOAT, ["batch", "seq", hidden_size])
        )
        onnx.save(m, fp32)
    if not os.path.exists(int8):
        quantize(fp32, int8, per_channel)
    return fp32, int8


def batches(tok, pad, pairs, batch_size):
    """(input_ids, attention_mask) per batch of batch_size pairs, in input order, padded to the longest."""
    for b in range(0, len(pairs), batch_size):
        enc = tok.encode_batch(pairs[b : b + batch_size])
        longest = max(len(e.ids) for e in enc)
        ids = np.full((len(enc), longest), pad, dtype=np.int64)
        mask = np.zeros((len(enc), longest), dtype=np.int64)
        for r, e in enumerate(enc):
            ids[r, : len(e.ids)] = e.ids
            mask[r, : len(e.ids)] = 1
        yield ids, mask


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def rel_l2(a, b):
    """Per row ||a - b|| / ||b||, in f64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def hidden_error(args, tok, pad, cfg, names, theirs):
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification

    fp32, int8 = export_hidden(args.model, args.onnx, args.per_channel, cfg["hidden_size"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sessions = [ort.InferenceSession(p, so, providers=["CPUExecutionProvider"]) for p in (fp32, int8)]
    torch.set_num_threads(args.threads)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, dtype=torch.float32)
    model.eval()

    def run(pairs):
        """<s> hidden states and scores: fp32 ONNX, int8 ONNX, PyTorch."""
        h, s = [[], [], []], [[], [], []]
        for ids, mask in batches(tok, pad, pairs, args.batch_size):
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            for k, session in enumerate(sessions):
                logits, hidden = session.run(["logits", "last_hidden_state"], feed)
                h[k].append(hidden[:, 0])
                s[k].append(sigmoid(logits[:, 0]))
            with torch.no_grad():
                out = model(**{k: torch.from_numpy(v) for k, v in feed.items()}, output_hidden_states=True)
            h[2].append(out.hidden_states[-1][:, 0].numpy())
            s[2].append(sigmoid(out.logits[:, 0].numpy()))
        return [np.concatenate(x) for x in h], [np.concatenate(x) for x in s]

    print(f"<s> hidden state error: onnxruntime {ort.__version__} int8 (quantize_dynamic, "
          f"{'per-channel' if args.per_channel else 'per-tensor'}) vs fp32 ONNX, and fp32 ONNX vs PyTorch "
          f"{torch.__version__} fp32; threads {args.threads}, batch_size {args.batch_size}, input order, padded batches")
    print(f"{'workload':<14} {'pairs':>6} {'tokens':>8} | {'int8 vs fp32: max rel L2':>24} {'mean rel L2':>12} "
          f"{'max|Δscore|':>12} | {'fp32 ONNX vs torch: max rel L2':>30} {'max|Δscore|':>12}")
    for name in names:
        rows = [json.loads(line) for line in open(os.path.join(args.workloads, name + ".jsonl")) if line.strip()]
        pairs = [(p["query"], p["passage"]) for p in rows]
        tokens = sum(len(e.ids) for e in tok.encode_batch(pairs))
        (h32, h8, ht), (s32, s8, st) = run(pairs)
        e8, et = rel_l2(h8, h32), rel_l2(h32, ht)
        print(f"{name:<14} {len(pairs):>6} {tokens:>8} | {e8.max():>24.3e} {e8.mean():>12.3e} "
              f"{np.abs(s8 - s32).max():>12.3e} | {et.max():>30.3e} {np.abs(s32 - st).max():>12.3e}")
        for label, by_name in theirs:
            if name in by_name:
                diff = max(abs(float(a) - float(b)) for a, b in zip(by_name[name]["scores"], s8))
                print(f"{'':<14} {label}: max |score - int8 here| {diff:.2e}")
        sys.stdout.flush()


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
    ap.add_argument("--hidden-error", action="store_true", help="int8 vs fp32 error of the <s> hidden state; nothing timed")
    ap.add_argument("--compare", nargs="*", default=[], help="JSON files written by `rerank bench --json`: report max |score - theirs|")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()

    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tok.enable_truncation(args.max_length, strategy="longest_first")
    tok.no_padding()
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    pad = cfg.get("pad_token_id", 1)
    theirs = []
    for f in args.compare:
        doc = json.load(open(f))
        theirs.append((f"{os.path.basename(f)} ({doc.get('dtype', '?')})", {r["workload"]: r for r in doc["results"]}))
    names = args.names or sorted(f[:-6] for f in os.listdir(args.workloads) if f.endswith(".jsonl"))
    if args.hidden_error:
        hidden_error(args, tok, pad, cfg, names, theirs)
        return

    path = export(args.model, args.onnx, args.per_channel)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    t0 = time.perf_counter()
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0

    def predict(pairs):
        out = []
        for ids, mask in batches(tok, pad, pairs, args.batch_size):
            logits = session.run(["logits"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0][:, 0]
            out.extend(sigmoid(logits).tolist())
        return out

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
