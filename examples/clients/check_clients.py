#!/usr/bin/env python3
"""Run real rerank client libraries, unchanged, against a running `rerank serve`.

    python check_clients.py --base http://127.0.0.1:8080 [--key KEY] [--only NAME ...]

Each client below is used the way its documentation tells a user to use it,
pointed at the base URL a user would type (the route column says which). The
expected answer comes from the engine itself: POST {base}/rerank with a plain
text-embeddings-inference body. A client is OK only when the order of document
indices it returned (and its scores, where it exposes them) equals the engine's;
for clients that apply top_n, the top-n prefix.

A Python process can only import the packages of its own virtual environment, so
clients whose packages are missing are reported as "not installed in this venv"
and not run; run.sh runs this script once per venv (see requirements/).

Platforms that are not pip-installable (Dify plugins, RAGFlow) are replicated
call for call with `requests`, citing their source; where such a platform uses a
pip package for the call (RAGFlow's "VLLM" provider: cohere==5.6.2; Dify's
xinference plugin: xinference-client==2.8.0) the real package is used.

See CALL-SHAPES.md for what each client sends and parses.
"""

import argparse
import importlib.metadata
import json
import math
import os
import sys
import urllib.request

QUERY = "中国的首都是哪里？"
DOCS = [
    "北京是中国的政治中心和首都。",
    "首都机场很大。",
    "what is panda? The giant panda is a bear.",
    "hi",
    "上海是中国最大的城市。",
]
TOP_N = 3  # passed to the clients that take a top_n / top_k
NO_KEY = "unused"  # what a user types where a client insists on a key but the server has none
TOLERANCE = 1e-4

DIFY = "langgenius/dify-official-plugins@7af22831a58d"
RAGFLOW = "infiniflow/ragflow@b1b8cd623520 rag/llm/rerank_model.py"


class Skip(Exception):
    """The client cannot do what this run asks (e.g. it cannot send a key)."""


class Mismatch(Exception):
    """The client ran but returned something other than the engine's answer."""


# ---------------------------------------------------------------------------
# The registry: one entry per client run.
# ---------------------------------------------------------------------------

CLIENTS = []


def client(name, needs, route, top_n=None, scores="sigmoid", replica=None):
    """Register a client run.

    needs:   {distribution: version prefix ("" for any)}; the first one is shown.
    route:   what the server receives, and from which base URL.
    top_n:   how many results the client returns (None: all documents).
    scores:  "sigmoid" (compare to the engine's scores), "raw" (to raw_scores=true),
             or None (the client exposes no score).
    replica: for replicated platforms, what is replicated (shown in the table).
    """

    def register(func):
        CLIENTS.append(dict(name=name, needs=needs, route=route, top_n=top_n,
                            scores=scores, replica=replica, func=func))
        return func

    return register


def index_of(text):
    """Clients that return documents, not indices: map the text back."""
    return DOCS.index(text)


def bearer(key):
    return {"Authorization": f"Bearer {key}"} if key else {}


# ---------------------------------------------------------------------------
# haystack (huggingface-api-haystack; haystack-ai's own TEI ranker moved there)
# ---------------------------------------------------------------------------

@client("haystack HuggingFaceTEIRanker", {"huggingface-api-haystack": "", "haystack-ai": ""},
        "POST /rerank (url = server root)", top_n=TOP_N)
def haystack_tei(base, key, model):
    from haystack import Document
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker

    ranker = HuggingFaceTEIRanker(url=base, top_k=TOP_N,
                                  token=Secret.from_token(key) if key else None)
    out = ranker.run(query=QUERY, documents=[Document(content=t) for t in DOCS])
    return [(index_of(d.content), d.score) for d in out["documents"]]


# ---------------------------------------------------------------------------
# rerankers (APIRanker)
# ---------------------------------------------------------------------------

@client("rerankers text-embeddings-inference", {"rerankers": ""},
        "POST /rerank (url = root + /rerank)")
def rerankers_tei(base, key, model):
    from rerankers import Reranker

    # APIRanker always sends "Authorization: Bearer <api_key>" (Bearer None without a key).
    ranker = Reranker("text-embeddings-inference", api_key=key, url=f"{base}/rerank", verbose=0)
    results = ranker.rank(query=QUERY, docs=DOCS)
    return [(r.document.doc_id, r.score) for r in results.results]


@client("rerankers cohere (url override)", {"rerankers": ""},
        "POST /v1/rerank (url = root + /v1/rerank)")
def rerankers_cohere(base, key, model):
    from rerankers import Reranker

    ranker = Reranker(model, model_type="cohere", api_key=key or NO_KEY, url=f"{base}/v1/rerank", verbose=0)
    results = ranker.rank(query=QUERY, docs=DOCS)
    return [(r.document.doc_id, r.score) for r in results.results]


# ---------------------------------------------------------------------------
# cohere SDK 7.x (ClientV2 and Client v1)
# ---------------------------------------------------------------------------

@client("cohere ClientV2", {"cohere": "7."}, "POST /v2/rerank (base_url = root)", top_n=TOP_N)
def cohere_v2(base, key, model):
    import cohere

    co = cohere.ClientV2(api_key=key or NO_KEY, base_url=base)
    res = co.rerank(model=model, query=QUERY, documents=DOCS, top_n=TOP_N)
    return [(r.index, r.relevance_score) for r in res.results]


@client("cohere Client (v1)", {"cohere": "7."}, "POST /v1/rerank (base_url = root)", top_n=TOP_N)
def cohere_v1(base, key, model):
    import cohere

    co = cohere.Client(api_key=key or NO_KEY, base_url=base)
    res = co.rerank(model=model, query=QUERY, documents=DOCS, top_n=TOP_N, return_documents=True)
    for r in res.results:
        if r.document is None or r.document.text != DOCS[r.index]:
            raise Mismatch(f"result {r.index}: document {r.document!r}, expected {DOCS[r.index]!r}")
    return [(r.index, r.relevance_score) for r in res.results]


# ---------------------------------------------------------------------------
# together SDK
# ---------------------------------------------------------------------------

@client("together rerank.create", {"together": ""}, "POST /v1/rerank (base_url = root)", top_n=TOP_N)
def together_rerank(base, key, model):
    from together import Together

    tg = Together(api_key=key or NO_KEY, base_url=base)
    res = tg.rerank.create(model=model, query=QUERY, documents=DOCS, top_n=TOP_N)
    return [(r.index, r.relevance_score) for r in res.results]


# ---------------------------------------------------------------------------
# xinference-client 4.x
# ---------------------------------------------------------------------------

@client("xinference-client get_model().rerank", {"xinference-client": "4."},
        "GET /v1/cluster/auth, GET /v1/models/{uid}, POST /v1/rerank (root)", top_n=TOP_N)
def xinference_client(base, key, model):
    from xinference_client import RESTfulClient as Client

    # Client() sends the key only if GET /v1/cluster/auth answers {"auth": true}.
    xc = Client(base, api_key=key)
    handle = xc.get_model(model)
    res = handle.rerank(DOCS, QUERY, top_n=TOP_N)
    return [(r["index"], r["relevance_score"]) for r in res["results"]]


# ---------------------------------------------------------------------------
# langchain
# ---------------------------------------------------------------------------

@client("langchain-cohere CohereRerank", {"langchain-cohere": ""},
        "POST /v2/rerank (base_url = root)", top_n=TOP_N)
def langchain_cohere(base, key, model):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    rr = CohereRerank(model=model, cohere_api_key=key or NO_KEY, base_url=base, top_n=TOP_N)
    out = rr.compress_documents([Document(page_content=t) for t in DOCS], QUERY)
    return [(index_of(d.page_content), d.metadata["relevance_score"]) for d in out]


@client("langchain-community InfinityRerank", {"langchain-community": "", "infinity-client": ""},
        "POST /rerank, Cohere body (infinity_client base_url = root)", top_n=TOP_N)
def langchain_infinity(base, key, model):
    import infinity_client
    from langchain_community.document_compressors.infinity_rerank import InfinityRerank
    from langchain_core.documents import Document

    # InfinityRerank's pydantic field accepts only infinity_client.Client (not AuthenticatedClient),
    # so a key goes in as a header.
    ic = infinity_client.Client(base_url=base, headers=bearer(key))
    rr = InfinityRerank(client=ic, model=model, top_n=TOP_N)
    try:
        out = rr.compress_documents([Document(page_content=t) for t in DOCS], QUERY)
    except TypeError as e:
        if "NoneType" not in str(e):
            raise
        # infinity_client's rerank.sync() returns None for any status but 200/422.
        raise Mismatch(f"{e} (infinity_client got a status other than 200/422)") from e
    return [(index_of(d.page_content), d.metadata["relevance_score"]) for d in out]


@client("langchain-nvidia NVIDIARerank", {"langchain-nvidia-ai-endpoints": ""},
        "GET /v1/models, POST /v1/ranking (base_url = root + /v1)", top_n=TOP_N, scores="raw")
def langchain_nvidia(base, key, model):
    from langchain_core.documents import Document
    from langchain_nvidia_ai_endpoints import NVIDIARerank

    # No model given: the client picks the first id of GET /v1/models (the NIM docs' example).
    rr = NVIDIARerank(base_url=f"{base}/v1", api_key=key, top_n=TOP_N)
    out = rr.compress_documents([Document(page_content=t) for t in DOCS], QUERY)
    return [(index_of(d.page_content), d.metadata["relevance_score"]) for d in out]


# ---------------------------------------------------------------------------
# llama-index
# ---------------------------------------------------------------------------

def llama_nodes():
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(text=t)) for t in DOCS]


@client("llama-index TextEmbeddingInference", {"llama-index-postprocessor-tei-rerank": ""},
        "POST /rerank (base_url = root)", top_n=TOP_N)
def llama_tei(base, key, model):
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    # auth_token is sent raw as the Authorization value: the user writes "Bearer ...".
    rr = TextEmbeddingInference(model_name=model, base_url=base, top_n=TOP_N,
                                auth_token=f"Bearer {key}" if key else None)
    out = rr.postprocess_nodes(llama_nodes(), query_str=QUERY)
    return [(index_of(n.node.get_content()), n.score) for n in out]


@client("llama-index CohereRerank", {"llama-index-postprocessor-cohere-rerank": ""},
        "POST /v2/rerank (base_url = root)", top_n=TOP_N)
def llama_cohere(base, key, model):
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    rr = CohereRerank(api_key=key or NO_KEY, model=model, top_n=TOP_N, base_url=base)
    out = rr.postprocess_nodes(llama_nodes(), query_str=QUERY)
    return [(index_of(n.node.get_content()), n.score) for n in out]


# ---------------------------------------------------------------------------
# litellm.rerank(), one run per provider
# ---------------------------------------------------------------------------

def litellm_rerank(provider, api_base, key, model, key_required):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price list
    import litellm

    litellm.suppress_debug_info = True

    api_key = key or (NO_KEY if key_required else None)
    res = litellm.rerank(model=f"{provider}/{model}", query=QUERY, documents=DOCS,
                         top_n=TOP_N, api_base=api_base, api_key=api_key)
    got = []
    for r in res.results:
        doc = r.get("document")
        if doc is not None and doc.get("text") != DOCS[r["index"]]:
            raise Mismatch(f"result {r['index']}: document {doc!r}, expected {DOCS[r['index']]!r}")
        got.append((r["index"], r["relevance_score"]))
    return got


@client("litellm cohere/", {"litellm": ""}, "POST /v2/rerank (api_base = root)", top_n=TOP_N)
def litellm_cohere(base, key, model):
    return litellm_rerank("cohere", base, key, model, key_required=True)


@client("litellm infinity/", {"litellm": ""}, "POST /rerank, Cohere body (api_base = root)", top_n=TOP_N)
def litellm_infinity(base, key, model):
    return litellm_rerank("infinity", base, key, model, key_required=False)


@client("litellm hosted_vllm/", {"litellm": ""}, "POST /rerank, Cohere body (api_base = root)", top_n=TOP_N)
def litellm_vllm(base, key, model):
    return litellm_rerank("hosted_vllm", base, key, model, key_required=False)


@client("litellm huggingface/ (TEI)", {"litellm": ""}, "POST /rerank (api_base = root)", top_n=TOP_N)
def litellm_huggingface(base, key, model):
    return litellm_rerank("huggingface", base, key, model, key_required=False)


@client("litellm jina_ai/", {"litellm": ""}, "POST /v1/rerank (api_base = root)", top_n=TOP_N)
def litellm_jina(base, key, model):
    return litellm_rerank("jina_ai", base, key, model, key_required=True)


@client("litellm together_ai/", {"litellm": ""}, "POST /v1/rerank (api_base = root + /v1)", top_n=TOP_N)
def litellm_together(base, key, model):
    return litellm_rerank("together_ai", f"{base}/v1", key, model, key_required=True)


# ---------------------------------------------------------------------------
# Dify plugins (not pip-installable): replicated from DIFY
# ---------------------------------------------------------------------------

@client("Dify huggingface_tei", {"requests": ""}, "GET /info, POST /rerank (server_url = root)",
        top_n=TOP_N, replica="Dify huggingface_tei 0.1.10")
def dify_tei(base, key, model):
    import requests

    headers = {"Content-Type": "application/json", **bearer(key)}
    # validate_credentials: models/huggingface_tei/models/helper.py L61-103 (GET {server_url}/info)
    info = requests.get(f"{base}/info", headers=headers, timeout=10)
    if info.status_code != 200:
        raise Mismatch(f"GET /info: {info.status_code} {info.text[:100]}")
    model_type = info.json().get("model_type", {})
    if not isinstance(model_type, dict) or len(model_type.keys()) < 1:  # helper.py L89-91
        raise Mismatch(f"/info model_type is {model_type!r}, Dify needs a dict keyed 'reranker'")
    if list(model_type.keys())[0] != "reranker":  # rerank/rerank.py L88-91
        raise Mismatch(f"/info model_type {model_type!r} is not a reranker")
    # _invoke: models/huggingface_tei/models/helper.py L219-232, rerank/rerank.py L66-74
    resp = requests.post(f"{base}/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True},
                         headers=headers, timeout=60)
    resp.raise_for_status()
    got = []
    for result in resp.json():
        if result["text"] != DOCS[result["index"]]:
            raise Mismatch(f"result {result['index']}: text {result['text']!r}")
        got.append((result["index"], result["score"]))
        if len(got) >= TOP_N:  # top_n applied client-side, in server order (L72-73)
            break
    return got


def dify_openai_compatible(endpoint_url, key, model):
    """models/openai_api_compatible/models/rerank/rerank.py L77-169 (text mode)."""
    import requests

    endpoint_url = endpoint_url.rstrip("/")
    headers = {"Content-Type": "application/json", **bearer(key)}
    payload = {"model": model, "query": QUERY, "documents": DOCS, "top_n": TOP_N}
    resp = requests.post(f"{endpoint_url}/rerank", headers=headers, json=payload, timeout=60)
    resp.raise_for_status()
    got = [(item.get("index", 0), item.get("relevance_score", 0.0))
           for item in resp.json().get("results", []) if item.get("index", 0) < len(DOCS)]
    got.sort(key=lambda x: x[1], reverse=True)
    return got[:TOP_N]


@client("Dify openai_api_compatible (/v1)", {"requests": ""}, "POST /v1/rerank (endpoint_url = root + /v1)",
        top_n=TOP_N, replica="Dify openai_api_compatible 0.0.63")
def dify_oai_v1(base, key, model):
    return dify_openai_compatible(f"{base}/v1", key, model)


@client("Dify openai_api_compatible (root)", {"requests": ""}, "POST /rerank, Cohere body (endpoint_url = root)",
        top_n=TOP_N, replica="Dify openai_api_compatible 0.0.63")
def dify_oai_root(base, key, model):
    return dify_openai_compatible(base, key, model)


@client("Dify xinference", {"xinference-client": "2.8."},
        "GET /v1/cluster/auth, GET /v1/models/{uid}, POST /v1/rerank (server_url = root)",
        top_n=TOP_N, replica="Dify xinference 0.0.15")
def dify_xinference(base, key, model):
    from xinference_client.client.restful.restful_client import Client, RESTfulRerankModelHandle

    # validate_credentials: models/xinference/models/rerank/rerank.py L71-101
    if any(c in model for c in "/?#"):  # xinference_helper.py L156-166
        raise Skip(f"Dify rejects a model_uid with / ? or #: {model!r} (serve with a plain name)")
    handle = Client(base_url=base, api_key=key).get_model(model_uid=model)
    if not isinstance(handle, RESTfulRerankModelHandle):
        raise Mismatch(f"get_model returned {type(handle).__name__}, not a rerank handle")
    # _invoke: rerank.py L23-69 builds the handle itself, with the key as a Bearer header.
    handle = RESTfulRerankModelHandle(model, base, bearer(key))
    response = handle.rerank(documents=DOCS, query=QUERY, top_n=TOP_N, return_documents=True)
    got = []
    for result in response["results"]:
        document = result["document"]
        text = document if isinstance(document, str) else document["text"]
        if text != DOCS[result["index"]]:
            raise Mismatch(f"result {result['index']}: document {document!r}")
        got.append((result["index"], float(result.get("relevance_score") or 0.0)))
    return got


# ---------------------------------------------------------------------------
# RAGFlow (not pip-installable): replicated from RAGFLOW. RAGFlow reads scores by
# index (order-free), so the order checked is the client's sort of those scores;
# scores in [0, 1] pass its _normalize_rank (L71-100) unchanged.
# ---------------------------------------------------------------------------

def ragflow_rank(results, key_index="index", key_score="relevance_score"):
    """rank[d["index"]] = d["relevance_score"]; RAGFlow logs a parse error and keeps zeros."""
    rank = [0.0] * len(DOCS)
    try:
        for d in results:
            rank[d[key_index]] = d[key_score]
    except Exception as e:
        raise Mismatch(f"RAGFlow would log {type(e).__name__}: {e} and use zero scores")
    return sorted(enumerate(rank), key=lambda x: x[1], reverse=True)


@client("RAGFlow OpenAI-API-Compatible", {"requests": ""}, "POST /rerank, Cohere body (base_url = root)",
        replica="RAGFlow OpenAI_APIRerank")
def ragflow_oai(base, key, model):
    import requests
    from urllib.parse import urljoin

    # OpenAI_APIRerank L266-298: Bearer always sent (an empty key gives "Bearer ").
    url = urljoin(f"{base.rstrip('/')}/", "rerank").rstrip("/")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key or ''}"}
    data = {"model": model, "query": QUERY, "documents": DOCS, "top_n": len(DOCS)}
    resp = requests.post(url, headers=headers, json=data, timeout=30)
    resp.raise_for_status()
    return ragflow_rank(resp.json().get("results", []))


@client("RAGFlow Xinference", {"requests": ""}, "POST /v1/rerank, string flags (base_url = root)",
        replica="RAGFlow XInferenceRerank")
def ragflow_xinference(base, key, model):
    import requests
    from urllib.parse import urljoin

    # XInferenceRerank L133-162: "return_documents"/"return_len" sent as strings, no top_n.
    url = base
    if url.find("/v1") == -1:
        url = urljoin(url, "/v1/rerank")
    if url.find("/rerank") == -1:
        url = urljoin(url, "/v1/rerank")
    key = key or "x"  # RAGFlow's placeholder for "no key"
    headers = {"Content-Type": "application/json", "accept": "application/json"}
    if key and key != "x":
        headers["Authorization"] = f"Bearer {key}"
    data = {"model": model, "query": QUERY, "return_documents": "true", "return_len": "true",
            "documents": DOCS}
    resp = requests.post(url, headers=headers, json=data, timeout=30)
    resp.raise_for_status()
    return ragflow_rank(resp.json().get("results", []))


@client("RAGFlow HuggingFace (TEI)", {"requests": ""}, "POST /rerank, batches of 8 (base_url = root)",
        replica="RAGFlow HuggingfaceRerank")
def ragflow_huggingface(base, key, model):
    import requests

    if key:
        raise Skip("RAGFlow's HuggingFace provider never sends a key (HuggingfaceRerank.post L677-700)")
    # HuggingfaceRerank.post L677-700
    scores = [0 for _ in range(len(DOCS))]
    batch_size = 8
    base_url = base.rstrip("/")
    endpoint = base_url if base_url.endswith("/rerank") else f"{base_url}/rerank"
    for i in range(0, len(DOCS), batch_size):
        res = requests.post(endpoint, headers={"Content-Type": "application/json"},
                            json={"query": QUERY, "texts": DOCS[i:i + batch_size],
                                  "raw_scores": False, "truncate": True}, timeout=30)
        res.raise_for_status()
        for o in res.json():
            scores[o["index"] + i] = o["score"]
    return sorted(enumerate(scores), key=lambda x: x[1], reverse=True)


@client("RAGFlow VLLM (cohere 5.6.2)", {"cohere": "5.6.2"}, "POST /rerank, Cohere body (base_url = root)",
        replica="RAGFlow CoHereRerank")
def ragflow_vllm(base, key, model):
    from cohere import Client

    # CoHereRerank L392-419; cohere 5.6.2 posts urljoin(base_url + "/", "rerank").
    co = Client(api_key=key or "x", timeout=30.0, base_url=base)
    res = co.rerank(model=model, query=QUERY, documents=DOCS, top_n=len(DOCS), return_documents=False)
    return ragflow_rank([{"index": d.index, "relevance_score": d.relevance_score} for d in res.results])


# ---------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------

def http_json(url, body=None, key=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **bearer(key)})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


def engine_ranking(base, key, raw):
    """The engine's own answer through the plain TEI route: [(index, score)] best first."""
    out = http_json(f"{base}/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": raw}, key)
    return [(r["index"], r["score"]) for r in out]


def installed(needs):
    """(True, "pkg==ver") if every distribution is installed with the version prefix."""
    shown = None
    for dist, prefix in needs.items():
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return False, f"{dist} not installed in this venv"
        if not version.startswith(prefix):
            return False, f"{dist}=={version} in this venv, this run needs {prefix}*"
        shown = shown or f"{dist}=={version}"
    return True, shown


def compare(got, entry, want, want_raw):
    """None if the client's answer is the engine's, else a one-line reason."""
    n = entry["top_n"] or len(DOCS)
    reference = want_raw if entry["scores"] == "raw" else want
    order = [int(i) for i, _ in got]
    expected = [i for i, _ in reference[:n]]
    if len(order) != n:
        return f"{len(order)} results {order}, expected top {n} {expected}"
    if order != expected:
        return f"order {order} != engine {expected}"
    if entry["scores"]:
        for (i, score), (_, ref) in zip(got, reference):
            if score is None or not math.isclose(float(score), ref, abs_tol=TOLERANCE):
                kind = "raw logit" if entry["scores"] == "raw" else "score"
                return f"doc {i}: {kind} {score} != engine {ref:.6f}"
    return None


def short(exc):
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    body = getattr(getattr(exc, "response", None), "text", None)  # requests/httpx errors: the server's words
    if isinstance(body, str) and body and body[:40] not in text:
        text += " | body: " + " ".join(body.split())[:120]
    return text if len(text) <= 200 else text[:197] + "..."


def run_one(entry, base, key, model, want, want_raw):
    ok, package = installed(entry["needs"])
    row = dict(name=entry["name"], package=package if ok else "-", route=entry["route"],
               replica=entry["replica"] or "")
    if not ok:
        return dict(row, status="N/A", reason=package)
    try:
        got = entry["func"](base, key, model)
        reason = compare(got, entry, want, want_raw)
    except Skip as e:
        return dict(row, status="SKIP", reason=str(e))
    except Exception as e:  # one client's failure must not stop the others
        reason = short(e)
    return dict(row, status="FAIL" if reason else "OK", reason=reason or "")


def print_table(rows):
    widths = [max(len(r[k]) for r in rows + [dict(name="client", package="package", status="result")])
              for k in ("name", "package", "status")]
    for r in rows:
        print(f"{r['name']:<{widths[0]}}  {r['package']:<{widths[1]}}  {r['status']:<{widths[2]}}  "
              f"{r['route']}" + (f"  -- {r['reason']}" if r["reason"] else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="server root, e.g. http://127.0.0.1:8080")
    ap.add_argument("--key", help="the server's --api-key; each client is configured with it")
    ap.add_argument("--model", help="model name the clients send (default: the server's /info name)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only clients whose name contains one of these")
    ap.add_argument("--no-replicas", action="store_true", help="skip the replicated Dify/RAGFlow calls")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON (run.sh merges them)")
    ap.add_argument("--list", action="store_true", help="list the client runs and exit")
    args = ap.parse_args()
    base = args.base.rstrip("/")

    entries = CLIENTS
    if args.only:
        entries = [e for e in entries if any(o.lower() in e["name"].lower() for o in args.only)]
    if args.no_replicas:
        entries = [e for e in entries if not e["replica"]]
    if args.list:
        for e in entries:
            print(f"{e['name']:<40} {e['route']}")
        return 0

    # The clients must not pick up keys from the caller's environment.
    for var in ("HF_API_TOKEN", "HF_TOKEN", "CO_API_KEY", "COHERE_API_KEY", "TOGETHER_API_KEY",
                "NVIDIA_API_KEY", "JINA_AI_API_KEY", "HUGGINGFACE_API_KEY", "CO_API_URL", "TOGETHER_BASE_URL"):
        os.environ.pop(var, None)

    try:
        want = engine_ranking(base, args.key, raw=False)
        want_raw = engine_ranking(base, args.key, raw=True)
        model = args.model
        if not model:
            info = http_json(f"{base}/info", key=args.key)
            model = info.get("served_model_name") or info.get("model_id")
    except Exception as e:
        print(f"cannot get the engine's own ranking from {base}/rerank: {short(e)}", file=sys.stderr)
        return 2
    print(f"engine ranking: {[i for i, _ in want]} (scores {[round(s, 4) for _, s in want]}); "
          f"model name sent: {model}; key: {'yes' if args.key else 'no'}")

    rows = [run_one(e, base, args.key, model, want, want_raw) for e in entries]
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, ensure_ascii=False, indent=1)
    return 1 if any(r["status"] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
