"""The Python package against the committed PyTorch golden outputs (tests/fixtures)."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest

import rerank

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
TINY = str(FIXTURES / "tiny")
TINY_BERT = str(FIXTURES / "tiny-bert")
GOLDEN = json.loads((FIXTURES / "golden.json").read_text())
GOLDEN_BERT = json.loads((FIXTURES / "golden_bert.json").read_text())


@pytest.fixture(scope="module")
def model():
    return rerank.CrossEncoder(TINY)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


@pytest.mark.parametrize("max_length", sorted({c["max_length"] for c in GOLDEN if c["truncation"] == "longest_first"}))
def test_cross_encoder_equals_golden(max_length):
    cases = [c for c in GOLDEN if c["truncation"] == "longest_first" and c["max_length"] == max_length]
    m = rerank.CrossEncoder(TINY, max_length=max_length)
    scores = m.predict([(c["query"], c["passage"]) for c in cases])
    np.testing.assert_allclose(scores, [c["score"] for c in cases], atol=1e-4, rtol=0)
    logits = m.predict([(c["query"], c["passage"]) for c in cases], activation_fn="Identity")
    np.testing.assert_allclose(logits, [c["logit"] for c in cases], atol=1e-4, rtol=0)


def test_flag_reranker_equals_golden():
    cases = [c for c in GOLDEN if c["truncation"] == "only_second"]
    assert cases
    f = rerank.FlagReranker(TINY)
    for c in cases:
        qml = None if c.get("query_max_length_is_default") else c["query_max_length"]
        got = f.compute_score(
            [c["query"], c["passage"]], max_length=c["max_length"], query_max_length=qml
        )
        assert isinstance(got, float)
        assert abs(got - c["logit"]) < 1e-4, c["name"]
        norm = f.compute_score([(c["query"], c["passage"])], max_length=c["max_length"], query_max_length=qml, normalize=True)
        assert isinstance(norm, list) and abs(norm[0] - c["score"]) < 1e-4


def test_bert_equals_golden():
    for max_length in sorted({c["max_length"] for c in GOLDEN_BERT}):
        cases = [c for c in GOLDEN_BERT if c["max_length"] == max_length]
        m = rerank.CrossEncoder(TINY_BERT, max_length=max_length)
        logits = m.predict([(c["query"], c["passage"]) for c in cases], activation_fn="Identity")
        np.testing.assert_allclose(logits, [c["logit"] for c in cases], atol=1e-4, rtol=0)


def test_predict_types_as_sentence_transformers(model):
    pairs = [("what is panda?", "The giant panda is a bear."), ["hi", "hello there"], ("q", "p")]
    scores = model.predict(pairs)
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float32 and scores.shape == (3,)
    one = model.predict(("what is panda?", "The giant panda is a bear."))
    assert isinstance(one, np.float32) and one == scores[0]
    assert model.predict(["hi", "hello there"]) == scores[1]
    empty = model.predict([])
    assert isinstance(empty, np.ndarray) and empty.shape == (0,)
    listed = model.predict(pairs, convert_to_numpy=False)
    assert isinstance(listed, list) and len(listed) == 3
    assert ((scores > 0) & (scores < 1)).all()
    raw = model.predict(pairs, activation_fn="Identity")
    np.testing.assert_allclose(sigmoid(raw), scores, atol=1e-6)


def test_alone_equals_batched(model):
    pairs = [(c["query"], c["passage"]) for c in GOLDEN if c["max_length"] == 128 and c["truncation"] == "longest_first"]
    batched = model.predict(pairs, batch_size=32)
    small = model.predict(pairs, batch_size=3, show_progress_bar=True)
    alone = np.array([model.predict(p) for p in pairs])
    np.testing.assert_allclose(alone, batched, atol=1e-5)  # padding changes the rounding, not the score

    np.testing.assert_allclose(small, batched, atol=1e-5)


def test_rank(model):
    docs = ["The giant panda is a bear.", "hi", "Pandas eat bamboo.", "nothing"]
    scores = model.predict([("what is panda?", d) for d in docs])
    ranked = model.rank("what is panda?", docs)
    assert [r["corpus_id"] for r in ranked] == list(np.argsort(-scores, kind="stable"))
    assert all(set(r) == {"corpus_id", "score"} for r in ranked)
    assert all(isinstance(r["score"], float) and isinstance(r["corpus_id"], int) for r in ranked)
    assert [r["score"] for r in ranked] == sorted(scores.tolist(), reverse=True)
    top = model.rank("what is panda?", docs, top_k=2, return_documents=True)
    assert len(top) == 2 and top[0]["text"] == docs[top[0]["corpus_id"]]


def test_compute_score_semantics():
    f = rerank.FlagReranker(TINY)
    pairs = [["what is panda?", "The giant panda is a bear."], ["hi", "hello"]]
    raw = f.compute_score(pairs)
    assert isinstance(raw, list) and all(isinstance(x, float) for x in raw)
    norm = f.compute_score(pairs, normalize=True)
    np.testing.assert_allclose(norm, sigmoid(raw), atol=1e-6)
    assert rerank.FlagReranker(TINY, normalize=True).compute_score(pairs[0]) == pytest.approx(norm[0], abs=1e-7)
    assert isinstance(f.compute_score(tuple(pairs[1])), float)


def test_errors_are_exceptions(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        rerank.CrossEncoder(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="unknown dtype"):
        rerank.CrossEncoder(TINY, dtype="f8")
    with pytest.raises(ValueError, match="exceeds this model's limit"):
        rerank.Engine(TINY, max_length=100000)
    with pytest.warns(UserWarning, match="exceeds this model's limit of 128"):
        assert rerank.CrossEncoder(TINY, max_length=8192).max_length == 128
    with pytest.raises(FileNotFoundError, match="cannot load the model"):
        rerank.CrossEncoder(str(tmp_path))
    m = rerank.CrossEncoder(TINY)
    with pytest.raises(ValueError, match="convert_to_tensor"):
        m.predict([("a", "b")], convert_to_tensor=True)
    with pytest.raises(ValueError, match="apply_softmax"):
        m.predict([("a", "b")], apply_softmax=True)
    with pytest.raises(ValueError, match="activation_fn"):
        m.predict([("a", "b")], activation_fn=lambda x: x)
    with pytest.raises(ValueError, match="batch_size"):
        m.predict([("a", "b")], batch_size=0)
    with pytest.raises(ValueError, match="pair"):
        m.predict([("a", "b", "c")])
    if not rerank._native.cuda_built():
        with pytest.raises(RuntimeError, match="CUDA build"):
            rerank.CrossEncoder(TINY, device="cuda")


def test_threads_at_once(model):
    pairs = [(c["query"], c["passage"]) for c in GOLDEN if c["max_length"] == 128]
    expected = model.predict(pairs)
    results, errors = [None] * 6, []

    def work(i):
        try:
            results[i] = model.predict(pairs, batch_size=4)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_allclose(r, expected, atol=1e-6)


def test_threads_option():
    # the pool is sized once per process: the answer is the size in force
    n = rerank.set_threads(2)
    assert n >= 1 and rerank._native.current_threads() == n


def test_hub_id_resolved_as_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE is set"):
        rerank.CrossEncoder("nobody/no-such-model")
