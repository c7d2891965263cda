"""Cross-encoder reranking without PyTorch.

``rerank.CrossEncoder`` is a drop-in for ``sentence_transformers.CrossEncoder``
and ``rerank.FlagReranker`` for ``FlagEmbedding.FlagReranker``: change the
import, keep the script. Both run the Rust engine of this repository (the GIL
is released while it tokenizes and computes).

Threads: ``threads=N`` sets the engine's compute threads, as the CLI's
``--threads`` does. They come from one process-wide pool that can be sized
only once: the first ``threads=`` given (before any model computed) wins,
later different values warn and keep it. ``RAYON_NUM_THREADS`` set before
the import does the same.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import _native
from ._native import DEFAULT_MODEL, Engine

__all__ = ["CrossEncoder", "FlagReranker", "Engine", "DEFAULT_MODEL", "set_threads"]
__version__ = _native.__version__


def set_threads(n: int) -> int:
    """Sizes the compute thread pool (once per process); returns the size in force."""
    in_force = _native.set_threads(int(n))
    if in_force != n:
        warnings.warn(
            f"threads={n} ignored: this process's compute pool already runs {in_force} threads "
            "(it can be sized once per process, before any model computes)",
            RuntimeWarning,
            stacklevel=3,
        )
    return in_force


def _device(device: str | None) -> str:
    """sentence-transformers' devices to ours: None/cpu, cuda, cuda:N."""
    if device is None:
        return "cpu"
    device = str(device)
    if device == "cuda" and not _native.cuda_built():
        raise RuntimeError(
            "device='cuda' needs a CUDA build of rerank; this one is CPU-only. "
            "Build it with CUDA: `pip install ./python --config-settings=build-args='--features cuda'` "
            "(needs the CUDA toolkit), or use device='cpu'"
        )
    return device


def _load(model: str, threads: int | None, **options: Any) -> Engine:
    if threads is not None:
        set_threads(threads)
    return Engine(model, **options)


def _is_pair(x: Any) -> bool:
    return isinstance(x, (tuple, list, np.ndarray)) and len(x) == 2 and all(isinstance(t, str) for t in x)


def _pairs(items: Iterable[Any]) -> list[tuple[str, str]]:
    out = []
    for i, item in enumerate(items):
        try:
            q, p = item
        except (TypeError, ValueError):
            raise ValueError(f"input {i} is not a (query, passage) pair: {item!r}") from None
        if not isinstance(q, str) or not isinstance(p, str):
            raise TypeError(f"input {i}: a pair holds two strings, got ({type(q).__name__}, {type(p).__name__})")
        out.append((q, p))
    return out


class _Progress:
    """tqdm when installed, else a plain bar on stderr."""

    def __init__(self, total: int, desc: str):
        self.total, self.done, self.desc = total, 0, desc
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="pair")
        except ImportError:
            self.bar = None
            self._draw()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        else:
            self._draw()

    def _draw(self) -> None:
        width = 30
        fill = int(width * self.done / self.total) if self.total else width
        sys.stderr.write(f"\r{self.desc}: [{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _logits(engine: Engine, pairs, batch_size: int, show_progress_bar: bool, desc: str, **overrides) -> list[float]:
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    if not show_progress_bar or not pairs:
        return engine.logits(pairs, batch_size=batch_size, **overrides)
    bar = _Progress(len(pairs), desc)
    try:
        return engine.logits(pairs, batch_size=batch_size, progress=bar, **overrides)
    finally:
        bar.close()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _activation_kind(fn: Any) -> str:
    """'sigmoid' or 'identity' for the activations the engine applies; else an error."""
    name = type(fn).__name__ if not isinstance(fn, str) else fn
    if fn is None:
        return "default"
    if isinstance(fn, str):
        name = fn.rsplit(".", 1)[-1]
    if name in ("Sigmoid", "sigmoid"):
        return "sigmoid"
    if name in ("Identity", "identity"):
        return "identity"
    raise ValueError(
        f"activation_fn={fn!r} is not supported: rerank applies torch.nn.Sigmoid() or torch.nn.Identity() "
        "(or their names); pass activation_fn=torch.nn.Identity() and apply your function to the logits"
    )


class CrossEncoder:
    """Drop-in for ``sentence_transformers.CrossEncoder`` (one-label rerankers).

    Extras: ``dtype`` ("f32", "f16", "bf16", "int8"), ``truncation``
    ("longest-first", the sentence-transformers default, or "only-second"),
    ``threads``, ``batch_tokens`` (most padded tokens per forward pass).
    ``max_length=None`` means the model's full context (8192 for
    bge-reranker-v2-m3), as sentence-transformers reads it from the tokenizer.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        max_length: int | None = None,
        device: str | None = None,
        *,
        revision: str | None = None,
        activation_fn: Callable | None = None,
        num_labels: int | None = None,
        dtype: str | None = None,
        truncation: str | None = None,
        threads: int | None = None,
        batch_tokens: int | None = None,
        cache_folder: str | None = None,
        local_files_only: bool = False,
        token: bool | str | None = None,
        trust_remote_code: bool = False,
        backend: str = "torch",
        **kwargs: Any,
    ) -> None:
        if model_name_or_path is None:
            model_name_or_path = DEFAULT_MODEL
        unsupported = {k: v for k, v in kwargs.items() if v not in (None, False, {}, [])}
        if unsupported:
            raise TypeError(f"CrossEncoder: unsupported argument(s) {sorted(unsupported)} in rerank")
        if num_labels not in (None, 1):
            raise ValueError(f"num_labels={num_labels}: rerank runs one-label rerankers only")
        if backend not in ("torch", None):
            raise ValueError(f"backend={backend!r}: rerank is its own backend; leave it at 'torch'")
        if cache_folder is not None or token not in (None, True, False):
            raise ValueError(
                "cache_folder= and token= are not supported: set HF_HUB_CACHE / HF_HOME and HF_TOKEN instead"
            )
        if local_files_only:
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self._activation = _activation_kind(activation_fn)
        self.engine = _load(
            str(model_name_or_path),
            threads,
            revision=revision,
            max_length=max_length,
            dtype=dtype,
            device=_device(device),
            truncation=truncation,
            max_batch_tokens=batch_tokens,
            clamp_max_length=True,
        )
        if max_length is not None and self.engine.max_length < max_length:
            # sentence-transformers accepts it and fails on the first long input
            warnings.warn(
                f"max_length {max_length} exceeds this model's limit of {self.engine.max_length} "
                f"tokens per pair; using {self.engine.max_length}",
                stacklevel=2,
            )
        self.model_name_or_path = str(model_name_or_path)
        self.num_labels = self.engine.num_labels
        self.max_length = self.engine.max_length
        self.device = self.engine.device
        self.activation_fn = activation_fn

    def __repr__(self) -> str:
        return f"rerank.CrossEncoder({self.engine!r})"

    def _transform(self, logits: np.ndarray, activation_fn: Any) -> np.ndarray:
        kind = _activation_kind(activation_fn)
        if kind == "default":
            kind = self._activation if self._activation != "default" else self.engine.activation
        return _sigmoid(logits) if kind == "sigmoid" else logits

    def predict(
        self,
        sentences: Any = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        activation_fn: Callable | None = None,
        apply_softmax: bool | None = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        prompt_name: str | None = None,
        prompt: str | None = None,
        *,
        inputs: Any = None,
        **kwargs: Any,
    ):
        """Scores (query, passage) pairs: a float32 NumPy array in input order,
        or a NumPy float32 scalar for one pair (as sentence-transformers)."""
        if inputs is not None:
            sentences = inputs
        if sentences is None:
            raise TypeError("predict() missing the pairs to score")
        if convert_to_tensor:
            raise ValueError("convert_to_tensor=True needs PyTorch; rerank returns NumPy (convert_to_numpy=True)")
        if apply_softmax and self.num_labels == 1:
            raise ValueError("apply_softmax=True has no meaning for a one-label reranker (sentence-transformers ignores it)")
        if prompt_name is not None or prompt is not None:
            raise ValueError("prompts are not supported by rerank")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("device", "pool", "chunk_size") or v is not None}
        if kwargs:
            raise TypeError(f"predict(): unsupported argument(s) {sorted(kwargs)} in rerank")
        single = _is_pair(sentences)
        pairs = _pairs([sentences] if single else sentences)
        logits = np.asarray(
            _logits(self.engine, pairs, batch_size, bool(show_progress_bar), "Batches"), dtype=np.float32
        )
        if not len(pairs):
            return np.array([]) if convert_to_numpy else []
        scores = self._transform(logits, activation_fn)
        if not convert_to_numpy:
            scores = list(scores)
        return scores[0] if single else scores

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        activation_fn: Callable | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        """Documents best first: ``[{"corpus_id", "score", "text"?}]``, at most ``top_k``."""
        scores = self.predict(
            [[query, doc] for doc in documents],
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            activation_fn=activation_fn,
            prompt_name=prompt_name,
            prompt=prompt,
            **kwargs,
        )
        results = []
        for i, score in enumerate(np.asarray(scores).tolist()):
            results.append({"corpus_id": i, "score": score})
            if return_documents:
                results[-1]["text"] = documents[i]
        results.sort(key=lambda x: x["score"], reverse=True)
        return results[:top_k]


class FlagReranker:
    """Drop-in for ``FlagEmbedding.FlagReranker``: raw logits unless
    ``normalize=True``, FlagEmbedding's truncation (the query cut to
    ``query_max_length``, default 3/4 of ``max_length``, then only the passage).

    ``use_fp16=True`` runs f16 on CUDA and f32 on CPU, as FlagEmbedding
    (``dtype="bf16"`` or ``"int8"`` is the faster CPU choice). ``max_length``
    is capped at the model's own limit. Extras: ``dtype``, ``threads``.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        use_fp16: bool = False,
        query_instruction_for_rerank: str | None = None,
        query_instruction_format: str = "{}{}",
        passage_instruction_for_rerank: str | None = None,
        passage_instruction_format: str = "{}{}",
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        devices: str | list | None = None,
        batch_size: int = 128,
        query_max_length: int | None = None,
        max_length: int = 512,
        normalize: bool = False,
        *,
        dtype: str | None = None,
        threads: int | None = None,
        revision: str | None = None,
        **kwargs: Any,
    ) -> None:
        if model_name_or_path is None:
            model_name_or_path = DEFAULT_MODEL
        if kwargs:
            raise TypeError(f"FlagReranker: unsupported argument(s) {sorted(kwargs)} in rerank")
        if cache_dir is not None:
            raise ValueError("cache_dir= is not supported: set HF_HUB_CACHE or HF_HOME instead")
        if isinstance(devices, (list, tuple)):
            if len(devices) > 1:
                raise ValueError("several devices are not supported: rerank runs one device per model")
            devices = devices[0] if devices else None
        if isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit()):
            devices = f"cuda:{devices}"
        device = _device(devices)
        if dtype is None and use_fp16 and device != "cpu":
            dtype = "f16"  # FlagEmbedding turns fp16 off on CPU: f32 there
        self.query_instruction = (query_instruction_for_rerank, query_instruction_format)
        self.passage_instruction = (passage_instruction_for_rerank, passage_instruction_format)
        self.engine = _load(
            str(model_name_or_path),
            threads,
            revision=revision,
            dtype=dtype,
            device=device,
            truncation="only-second",
            max_length=max_length,
            query_max_length=query_max_length,
            clamp_max_length=True,
        )
        self.model_name_or_path = str(model_name_or_path)
        self.batch_size = batch_size
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.normalize = normalize

    def __repr__(self) -> str:
        return f"rerank.FlagReranker({self.engine!r})"

    def _instruct(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        (qi, qf), (pi, pf) = self.query_instruction, self.passage_instruction
        if qi is None:
            return pairs
        return [(qf.format(qi, q), pf.format(pi, p) if pi is not None else p) for q, p in pairs]

    def compute_score(
        self,
        sentence_pairs: Any,
        batch_size: int | None = None,
        query_max_length: int | None = None,
        max_length: int | None = None,
        normalize: bool | None = None,
        **kwargs: Any,
    ):
        """Scores of (query, passage) pairs, a list of floats in input order
        (one float for one pair): raw logits, sigmoid(logits) with ``normalize=True``."""
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if kwargs:
            raise TypeError(f"compute_score(): unsupported argument(s) {sorted(kwargs)} in rerank")
        batch_size = self.batch_size if batch_size is None else batch_size
        max_length = self.max_length if max_length is None else max_length
        max_length = min(max_length, self.engine.model_max_length)
        if query_max_length is None:
            # None: the engine's 3/4 of max_length (FlagEmbedding's default,
            # kept below the room a passage needs at a tiny max_length)
            query_max_length = self.query_max_length
        normalize = self.normalize if normalize is None else normalize
        single = _is_pair(sentence_pairs)
        pairs = self._instruct(_pairs([sentence_pairs] if single else sentence_pairs))
        logits = _logits(
            self.engine,
            pairs,
            batch_size,
            len(pairs) >= batch_size,
            "Compute Scores",
            max_length=max_length,
            query_max_length=query_max_length,
        )
        scores = [1.0 / (1.0 + math.exp(-x)) for x in logits] if normalize else [float(x) for x in logits]
        return scores[0] if single else scores
