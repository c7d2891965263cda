"""OpenVINO reference for `rerank bench`: what a sentence-transformers user gets by
changing one argument, `CrossEncoder(..., backend="openvino")`, on the same model files
and the same pairs, printing the same figures as bench/reference.py.

    rerank bench --synthetic --save /work/m3                          # model files
    rerank bench --model /work/m3 --dump /work/wl --json f32.json     # pairs + our scores
    python bench/reference_openvino.py --model /work/m3 --workloads /work/wl \
        --cache /work/m3-ov --threads 2 --modes fp32 bf16 int8 --compare f32.json

Modes (each its own CrossEncoder; the exported models are kept in --cache and reused):
- fp32: ov_config INFERENCE_PRECISION_HINT=f32;
- bf16: OpenVINO's default precision on this CPU (bf16 where the CPU has AVX512-BF16
  or AMX; the line printed says which precision OpenVINO reports);
- int8: static int8 as sentence-transformers' `export_static_quantized_openvino_model`
  makes it (optimum-intel's OVQuantizer, NNCF post-training quantization with
  OVQuantizationConfig's defaults), except for the calibration set: that function
  downloads glue/sst2, which this machine cannot, so the same number of samples is taken
  from the workloads' own passages (the first 300 distinct ones, at most; tokenized
  alone, padded to 384 tokens, as that function does).

Timed: predict() alone (tokenization + inference + sigmoid), batch size 16 as
bench/reference.py, median of --runs after one warm-up pair.

--accuracy DIR (a BERT or XLM-R cross-encoder with real weights, e.g. the MiniLM
cross-encoder that `cargo test --test it real_bert` assembles in
target/tmp/minilm-cross-encoder): instead of timing, scores the 60 pairs of
tests/fixtures/golden_minilm.json in every mode and prints max |sigmoid score -
PyTorch f32| and the minimum Spearman rank correlation per query, as
bench/real_bert_accuracy.py prints for ONNX Runtime.

Requirements: bench/requirements-openvino.txt (on top of bench/requirements.txt).
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from reference import flops, peak_rss_gib

ROOT = Path(__file__).resolve().parent.parent
INT8_FILE = "openvino/openvino_model_qint8_quantized.xml"


def load(model_dir, mode, threads, max_length, cache, calibration_texts):
    """A CrossEncoder on OpenVINO in `mode`; int8 is exported to `cache` first if missing."""
    from sentence_transformers import CrossEncoder

    ov_config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if mode == "fp32":
        ov_config["INFERENCE_PRECISION_HINT"] = "f32"
    kwargs = {"ov_config": ov_config}
    if mode != "int8":
        return CrossEncoder(model_dir, backend="openvino", max_length=max_length, model_kwargs=kwargs)
    if not (Path(cache) / INT8_FILE).exists():
        export_int8(model_dir, cache, calibration_texts, max_length)
    kwargs["file_name"] = INT8_FILE
    return CrossEncoder(cache, backend="openvino", max_length=max_length, model_kwargs=kwargs)


def export_int8(model_dir, cache, texts, max_length):
    """sentence-transformers' static int8 export, with a local calibration set."""
    import datasets
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(model_dir, backend="openvino", max_length=max_length)
    config = OVQuantizationConfig()
    quantizer = OVQuantizer.from_pretrained(model.transformers_model)
    texts = texts[: config.num_samples or 300]
    enc = model.tokenizer(texts, padding="max_length", max_length=384, truncation=True)
    calibration = datasets.Dataset.from_dict(dict(enc))
    t = time.perf_counter()
    quantizer.quantize(calibration, save_directory=cache,
                       ov_config=OVConfig(quantization_config=config))
    # The quantizer writes openvino_model.xml; sentence-transformers names it by suffix.
    ov = Path(cache) / "openvino"
    for ext in ("xml", "bin"):
        (ov / f"openvino_model.{ext}").rename(ov / f"openvino_model_qint8_quantized.{ext}")
    model.tokenizer.save_pretrained(cache)
    model.config.save_pretrained(cache)
    print(f"exported static int8 to {cache} in {time.perf_counter() - t:.1f} s "
          f"({len(texts)} calibration texts)", flush=True)


def precision_of(model):
    try:
        return model.transformers_model.request.get_property("INFERENCE_PRECISION_HINT")
    except Exception:  # noqa: BLE001 (a property name that changed: not worth failing for)
        return "?"


def spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    n = len(a)
    return 1 - 6 * float(((ra - rb) ** 2).sum()) / (n * (n * n - 1))


def accuracy(args):
    cases = json.loads((ROOT / "tests/fixtures/golden_minilm.json").read_text())
    pairs = [(c["query"], c["passage"]) for c in cases]
    ref = 1 / (1 + np.exp(-np.array([c["logit"] for c in cases])))
    texts = sorted({p for _, p in pairs})
    for mode in args.modes:
        cache = os.path.join(args.cache, "accuracy")
        model = load(args.accuracy, mode, args.threads, 512, cache, texts)
        got = np.array(model.predict(pairs, batch_size=16, show_progress_bar=False))
        rho = min(spearman(got[i:i + 20], ref[i:i + 20]) for i in range(0, len(got), 20))
        print(f"OpenVINO {mode} ({precision_of(model)}): max |score - PyTorch f32| "
              f"{np.abs(got - ref).max():.2e}, min Spearman per query {rho:.4f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--workloads")
    ap.add_argument("--names", nargs="*", default=None)
    ap.add_argument("--modes", nargs="*", default=["fp32", "bf16", "int8"])
    ap.add_argument("--cache", required=True, help="where the exported int8 model is kept")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=8192)
    ap.add_argument("--compare", help="JSON written by `rerank bench --json`: report max |score - it|")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--accuracy", help="real-weights model directory: accuracy on golden_minilm.json, no timing")
    args = ap.parse_args()
    import openvino

    print(f"openvino {openvino.__version__}", flush=True)
    if args.accuracy:
        return accuracy(args)
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    ours = {}
    if args.compare:
        ours = {r["workload"]: r for r in json.load(open(args.compare))["results"]}
    names = args.names or sorted(f[:-6] for f in os.listdir(args.workloads) if f.endswith(".jsonl"))
    workloads = {}
    for name in names:
        rows = [json.loads(line) for line in open(os.path.join(args.workloads, name + ".jsonl")) if line.strip()]
        workloads[name] = [(p["query"], p["passage"]) for p in rows]
    texts = list(dict.fromkeys(p for pairs in workloads.values() for _, p in pairs))
    results = []
    for mode in args.modes:
        t0 = time.perf_counter()
        model = load(args.model, mode, args.threads, args.max_length, args.cache, texts)
        load_s = time.perf_counter() - t0
        print(f"reference: sentence-transformers CrossEncoder.predict, backend openvino, {mode} "
              f"(INFERENCE_PRECISION_HINT {precision_of(model)}), threads {args.threads}, "
              f"batch_size {args.batch_size}, load {load_s:.2f} s")
        print(f"{'workload':<14} {'pairs':>6} {'tokens':>8} {'median s':>10} {'pairs/s':>9} {'tokens/s':>10} "
              f"{'GFLOP/s':>9} {'peak GiB':>9} {'max|Δscore|':>12}")
        for name, pairs in workloads.items():
            enc = model.tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation=True,
                                  max_length=args.max_length)
            lens = [len(x) for x in enc["input_ids"]]
            total_flops = sum(flops(cfg, n) for n in lens)
            model.predict(pairs[:1], batch_size=args.batch_size, show_progress_bar=False)  # warm-up
            times, scores = [], None
            for _ in range(args.runs):
                t = time.perf_counter()
                scores = model.predict(pairs, batch_size=args.batch_size, show_progress_bar=False)
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            diff = ""
            if name in ours:
                diff = f"{max(abs(float(a) - float(b)) for a, b in zip(ours[name]['scores'], scores)):.2e}"
            print(f"{name:<14} {len(pairs):>6} {sum(lens):>8} {med:>10.3f} {len(pairs)/med:>9.2f} "
                  f"{sum(lens)/med:>10.0f} {total_flops/med/1e9:>9.1f} {peak_rss_gib():>9.2f} {diff:>12}")
            results.append({"mode": mode, "workload": name, "tokens": sum(lens), "runs_s": times,
                            "median_s": med, "load_s": load_s, "scores": [float(s) for s in scores]})
            sys.stdout.flush()
        del model
    if args.json:
        json.dump({"results": results}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
