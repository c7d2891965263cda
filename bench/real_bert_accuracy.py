#!/usr/bin/env python3
"""ONNX Runtime int8 on the real-weights BERT cross-encoder, for the accuracy table.

    cargo test --test it real_bert -- --nocapture     # assembles target/tmp/minilm-cross-encoder,
                                                      # prints our bf16/int8 against our f32
    /work/venv/bin/python bench/real_bert_accuracy.py [--model target/tmp/minilm-cross-encoder]

On the 60 pairs of tests/fixtures/golden_minilm.json (3 queries x 20 passages): PyTorch f32
(transformers) as the reference, then the same model exported with torch.onnx.export (a
wrapper that also returns the final [CLS] hidden state, what the pooler reads) and quantized
with onnxruntime.quantization.quantize_dynamic (int8 weights per channel, u8 activations
quantized on the fly: the "dynamic, per-channel" configuration). Prints, for ONNX fp32 and
ONNX int8 against PyTorch f32: max relative L2 error of the [CLS] state, max |sigmoid score
difference|, min Spearman rank correlation per query. Requirements: bench/requirements-onnx.txt.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoModelForSequenceClassification, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent


def spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    n = len(a)
    return 1 - 6 * float(((ra - rb) ** 2).sum()) / (n * (n * n - 1))


class WithHidden(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         output_hidden_states=True)
        return out.logits, out.hidden_states[-1][:, 0]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def metrics(name, logits, hidden, ref_logits, ref_hidden):
    rel = max(float(np.linalg.norm(h - r) / np.linalg.norm(r)) for h, r in zip(hidden, ref_hidden))
    score = float(np.abs(sigmoid(logits) - sigmoid(ref_logits)).max())
    rho = min(spearman(logits[i:i + 20], ref_logits[i:i + 20]) for i in range(0, len(logits), 20))
    print(f"{name}: max rel. L2 [CLS] {rel:.2e}, max |score - PyTorch f32| {score:.2e}, min Spearman per query {rho:.4f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "target/tmp/minilm-cross-encoder"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cases = json.loads((ROOT / "tests/fixtures/golden_minilm.json").read_text())
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).float().eval()
    wrapped = WithHidden(model).eval()
    encs = [tok([c["query"]], [c["passage"]], truncation=True, max_length=512, return_tensors="pt") for c in cases]
    with torch.no_grad():
        outs = [wrapped(e["input_ids"], e["attention_mask"], e["token_type_ids"]) for e in encs]
    ref_logits = np.array([o[0][0, 0].item() for o in outs])
    ref_hidden = [o[1][0].numpy() for o in outs]
    assert np.abs(ref_logits - np.array([c["logit"] for c in cases])).max() < 1e-4
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = os.path.join(tmp, "model.onnx"), os.path.join(tmp, "model-int8.onnx")
        e = encs[0]
        torch.onnx.export(wrapped, (e["input_ids"], e["attention_mask"], e["token_type_ids"]), fp32,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["logits", "cls"],
                          dynamic_axes={k: {0: "batch", 1: "seq"} for k in ["input_ids", "attention_mask", "token_type_ids"]},
                          opset_version=17, dynamo=False)
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=True)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        for name, path in [("ONNX Runtime fp32", fp32), ("ONNX Runtime int8 (dynamic, per-channel)", int8)]:
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            res = [sess.run(None, {k: v.numpy() for k, v in e.items()}) for e in encs]
            metrics(name, np.array([r[0][0, 0] for r in res]), [r[1][0] for r in res], ref_logits, ref_hidden)


if __name__ == "__main__":
    main()
