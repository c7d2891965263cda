#!/usr/bin/env python3
"""Builds the sample collection of the README's "Evaluate a reranker" example.

    python3 -m venv /tmp/venv-eval
    /tmp/venv-eval/bin/pip install -r tests/fixtures/requirements.txt -r tests/fixtures/eval/requirements-eval.txt
    /tmp/venv-eval/bin/python examples/trec-sample/make_sample.py

Writes, next to this file, in BEIR's layout:
  corpus.jsonl      300 short passages ({"_id", "title", "text"})
  queries.jsonl     8 queries ({"_id", "text"})
  qrels/test.tsv    graded judgments (query-id, corpus-id, score; 2 = answers, 1 = on topic)
  bm25.run          the top 100 of each query by BM25 (rank-bm25's BM25Okapi), TREC format
and tests/fixtures/trec_sample_golden.json: the README's `rerank trec` + `rerank eval`
done by the reference tools (BEIR's title + text join, sentence-transformers'
CrossEncoder on tests/fixtures/tiny, pytrec_eval), for tests/it/cli_trec.rs.

The texts are made up here from templates (seeded, so the files are the same
on every run): no third-party corpus is copied.
"""

import json
import random
import re
from pathlib import Path

from rank_bm25 import BM25Okapi

HERE = Path(__file__).resolve().parent

TOPICS = {
    "bees": ("honeybees", "hive", "pollen", "queen", "swarm", "nectar"),
    "volcano": ("volcano", "lava", "magma", "eruption", "crater", "ash"),
    "bread": ("bread", "dough", "yeast", "flour", "oven", "crust"),
    "bicycle": ("bicycle", "chain", "gears", "brakes", "tyre", "saddle"),
    "tea": ("tea", "leaves", "plantation", "brewing", "green tea", "harvest"),
    "chess": ("chess", "opening", "bishop", "checkmate", "pawn", "endgame"),
    "solar": ("solar panel", "sunlight", "inverter", "battery", "roof", "electricity"),
    "river": ("river", "delta", "floodplain", "current", "fish", "estuary"),
}

QUERIES = {
    "bees": ("why do honeybees swarm", "A honeybee colony swarms when the old queen leaves the hive with half of the workers to found a new colony."),
    "volcano": ("what makes a volcano erupt", "A volcano erupts when pressure from gas-rich magma below the crater becomes greater than the rock above it can hold."),
    "bread": ("why does bread dough rise", "Bread dough rises because yeast eats the sugars in the flour and releases carbon dioxide that the gluten traps."),
    "bicycle": ("how to fix a slipping bicycle chain", "A slipping bicycle chain is usually fixed by replacing the worn chain and cassette and adjusting the rear derailleur."),
    "tea": ("how is green tea processed", "Green tea leaves are heated soon after the harvest, which stops oxidation and keeps them green."),
    "chess": ("what is the goal of a chess opening", "The goal of a chess opening is to develop the pieces, control the centre and bring the king to safety."),
    "solar": ("what does a solar inverter do", "A solar inverter turns the direct current from the solar panel into alternating current for the house."),
    "river": ("how is a river delta formed", "A river delta forms where the current slows at the sea and drops the sand and silt it carries."),
}

VERBS = ("is often discussed with", "has much to do with", "depends on", "is studied together with", "can change", "is linked to")
OPENERS = ("Many people ask about", "Guides often describe", "A short note on", "Experts compare", "Visitors learn about", "Teachers explain")
GENERIC = (
    "The weather was mild that year.",
    "The report was written for a local newsletter.",
    "Several photographs were taken during the visit.",
    "A small museum nearby keeps records of it.",
    "The author lives in a quiet village.",
    "Prices have changed a lot over the decades.",
)


def sentence(rng, words):
    a, b = rng.sample(words, 2)
    return f"{rng.choice(OPENERS)} {a}, which {rng.choice(VERBS)} the {b}."


def main():
    rng = random.Random(2026)
    docs, qrels = [], []
    names = sorted(TOPICS)
    for i in range(300):
        topic = names[i % len(names)]
        words = TOPICS[topic]
        parts = [sentence(rng, words) for _ in range(rng.randrange(1, 3))]
        rel = 1
        if i % 24 < len(names) and rng.random() < 0.5:
            # an answer, somewhere in the passage
            parts.insert(rng.randrange(len(parts) + 1), QUERIES[topic][1])
            rel = 2
        elif rng.random() < 0.3:
            # a keyword trap: the query's words, another topic's content
            other = TOPICS[rng.choice([n for n in names if n != topic])]
            parts.append(f"This is not about {QUERIES[topic][0].split()[-1]}, it is about the {rng.choice(other)}.")
            rel = 0
        parts.append(rng.choice(GENERIC))
        doc_id = f"doc{i:03d}"
        title = f"{words[0].capitalize()} notes {i}"
        docs.append({"_id": doc_id, "title": title, "text": " ".join(parts)})
        qrels.append((f"q-{topic}", doc_id, rel))

    (HERE / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (HERE / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q-{t}", "text": QUERIES[t][0]}) + "\n" for t in names)
    )
    (HERE / "qrels").mkdir(exist_ok=True)
    (HERE / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{r}\n" for q, d, r in qrels)
    )

    def tokens(text):
        return re.findall(r"[a-z0-9]+", text.lower())

    bm25 = BM25Okapi([tokens(d["title"] + " " + d["text"]) for d in docs])
    lines = []
    for t in names:
        scores = bm25.get_scores(tokens(QUERIES[t][0]))
        order = sorted(range(len(docs)), key=lambda i: (-scores[i], docs[i]["_id"]))[:100]
        for rank, i in enumerate(order):
            lines.append(f"q-{t} Q0 {docs[i]['_id']} {rank + 1} {scores[i]:.6f} bm25")
    (HERE / "bm25.run").write_text("\n".join(lines) + "\n")
    write_golden(docs, names, lines)


def write_golden(docs, names, run_lines):
    """tests/fixtures/trec_sample_golden.json: the README's flow done by the
    reference tools: BEIR's text join and sentence-transformers' CrossEncoder
    (PyTorch) on tests/fixtures/tiny, then pytrec_eval on both runs."""
    import pytrec_eval
    from sentence_transformers import CrossEncoder

    root = HERE.parent.parent
    corpus = {d["_id"]: d for d in docs}
    queries = {f"q-{t}": QUERIES[t][0] for t in names}
    run = {}
    for line in run_lines:
        q, _, d, _, s, _ = line.split()
        run.setdefault(q, {})[d] = float(s)
    model = CrossEncoder(str(root / "tests/fixtures/tiny"), max_length=128, device="cpu")
    reranked = {}
    for q, ranked in run.items():
        # beir/reranking/rerank.py's join
        texts = [(corpus[d].get("title", "") + " " + corpus[d].get("text", "")).strip() for d in ranked]
        scores = model.predict([[queries[q], t] for t in texts], batch_size=32)
        reranked[q] = {d: float(s) for d, s in zip(ranked, scores)}
    qrels = {}
    for q, d, r in read_qrels():
        qrels.setdefault(q, {})[d] = r
    measures = {"ndcg_cut.10", "recip_rank", "recall.100", "map", "P.10"}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, measures)

    def mean(per_query):
        keys = {"ndcg_cut_10": "ndcg@10", "recall_100": "recall@100", "map": "map", "P_10": "p@10"}
        return {ours: sum(v[k] for v in per_query.values()) / len(per_query) for k, ours in keys.items()}

    golden = {
        "generator": "examples/trec-sample/make_sample.py",
        "reranked": reranked,
        "eval_bm25": mean(evaluator.evaluate(run)),
        "eval_reranked": mean(evaluator.evaluate(reranked)),
    }
    (root / "tests/fixtures/trec_sample_golden.json").write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


def read_qrels():
    rows = (HERE / "qrels" / "test.tsv").read_text().splitlines()[1:]
    return [(q, d, int(r)) for q, d, r in (row.split("\t") for row in rows)]


if __name__ == "__main__":
    main()
