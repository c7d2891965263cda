//! The OpenAPI 3.0 description served on `GET /openapi.json`, written by hand
//! next to the types in [`super::api`] (a test checks that every route of the
//! router is in it).

use serde_json::{json, Value};

fn error_responses(codes: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    codes
        .iter()
        .map(|(code, why)| {
            (
                code.to_string(),
                json!({
                    "description": why,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }),
            )
        })
        .collect()
}

fn rerank_responses(ok: Value) -> Value {
    let mut r = error_responses(&[
        ("400", "malformed JSON, wrong types, not UTF-8, or no texts"),
        ("401", "missing or wrong API key (when the server has one)"),
        ("408", "the body did not arrive within --body-read-timeout"),
        ("413", "body over the payload limit"),
        (
            "422",
            "too many documents, or a pair over the length limit with truncation off",
        ),
        (
            "429",
            "overloaded; retry after the Retry-After header's seconds",
        ),
        ("500", "the forward pass failed"),
        ("503", "shutting down (draining); retry on another replica"),
        (
            "504",
            "not answered within --request-timeout; its queued pairs were dropped",
        ),
    ]);
    r.insert("200".into(), ok);
    Value::Object(r)
}

/// One probe route's documentation.
fn probe(summary: &str) -> serde_json::Value {
    serde_json::json!({
        "summary": summary,
        "security": [],
        "responses": {
            "200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object", "properties": {
                "status": {"type": "string", "enum": ["ok"]},
                "model_thread": {"type": "string", "enum": ["idle", "busy"]},
                "pass_running_ms": {"type": "integer", "nullable": true},
                "last_success_ms_ago": {"type": "integer", "nullable": true},
                "queued_pairs": {"type": "integer"},
                "reserved_pairs": {"type": "integer"}
            }}}}},
            "503": {"description": "not ok (the message says why)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        }
    })
}

/// The whole document.
pub fn spec() -> Value {
    let timing = json!({
        "x-compute-type": {"schema": {"type": "string"}, "description": "device"},
        "x-compute-time": {"schema": {"type": "integer"}, "description": "tokenization + queue + inference, ms"},
        "x-compute-characters": {"schema": {"type": "integer"}},
        "x-compute-tokens": {"schema": {"type": "integer"}},
        "x-total-time": {"schema": {"type": "integer"}, "description": "ms"},
        "x-tokenization-time": {"schema": {"type": "integer"}, "description": "ms"},
        "x-queue-time": {"schema": {"type": "integer"}, "description": "ms"},
        "x-inference-time": {"schema": {"type": "integer"}, "description": "ms"}
    });
    // Kept out of the document's literal: json! nests too deep otherwise.
    let score_cache = json!({"type": "object", "nullable": true, "description": "the score cache (--cache-size); null when off", "properties": {
        "capacity": {"type": "integer", "description": "most pairs held"},
        "entries": {"type": "integer"},
        "bytes": {"type": "integer", "description": "estimated memory of the entries"},
        "hits": {"type": "integer"},
        "misses": {"type": "integer"},
        "evictions": {"type": "integer"}
    }});
    let memory = json!({"type": "object", "nullable": true, "description": "the memory limit (--memory-limit, else the cgroup's) and the limits derived from it; null without a limit", "properties": {
                            "limit_bytes": {"type": "integer"},
                            "source": {"type": "string", "enum": ["flag", "cgroup"]},
                            "resident_bytes": {"type": "integer", "description": "measured at start, after one forward pass"},
                            "reserve_bytes": {"type": "integer"},
                            "pass_bytes": {"type": "integer", "description": "for one forward pass's activations"},
                            "queue_bytes": {"type": "integer", "description": "for queued pairs"},
                            "activations": {"type": "object", "properties": {
                                "bytes_per_token": {"type": "integer"},
                                "bytes_per_pair_token_sq": {"type": "integer"},
                                "fixed_bytes": {"type": "integer"}
                            }},
                            "max_batch_tokens": {"type": "integer", "description": "padded tokens per pass that fit pass_bytes (max_batch_tokens above is the lower of it and --max-batch-tokens)"},
                            "max_queued_pairs": {"type": "integer"},
                            "longest_pair_that_fits": {"type": "integer"}}});
    let cohere = json!({
        "summary": "Rerank documents (Cohere / Jina schema)",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CohereRequest"}}}},
        "responses": rerank_responses(json!({
            "description": "results sorted by relevance_score, best first, cut to top_n",
            "headers": timing.clone(),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CohereResponse"}}}
        }))
    });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "rerank",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Cross-encoder reranking (BAAI/bge-reranker-v2-m3 family). Every error is {\"error\", \"error_type\", \"detail\"}. Every boolean field also accepts the strings \"true\" and \"false\"."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error", "error_type", "detail"],
                    "properties": {
                        "error": {"type": "string"},
                        "error_type": {"type": "string", "enum": ["bad_request", "empty", "unauthorized", "not_found", "model_not_found", "method_not_allowed", "request_timeout", "payload_too_large", "validation", "tokenizer", "overloaded", "backend", "unhealthy", "timeout"]},
                        "detail": {
                            "description": "FastAPI's field: the message; on 422 a list of one {loc, msg, type} holding it",
                            "oneOf": [
                                {"type": "string"},
                                {"type": "array", "items": {"type": "object", "required": ["loc", "msg", "type"], "properties": {
                                    "loc": {"type": "array", "items": {"type": "string"}},
                                    "msg": {"type": "string"},
                                    "type": {"type": "string"}
                                }}}
                            ]
                        }
                    }
                },
                "TeiRequest": {
                    "type": "object", "required": ["query", "texts"],
                    "properties": {
                        "query": {"type": "string"},
                        "texts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        "truncate": {"type": "boolean", "nullable": true, "description": "cut over-long pairs; default: the server's --auto-truncate (on). false: an over-long pair is a 422"},
                        "truncation_direction": {"type": "string", "enum": ["Left", "Right", "left", "right"], "nullable": true, "default": "Right"},
                        "raw_scores": {"type": "boolean", "nullable": true, "description": "raw logits instead of sigmoid scores", "default": false},
                        "return_text": {"type": "boolean", "nullable": true, "default": false},
                        "top_n": {"type": "integer", "minimum": 1, "nullable": true, "description": "keep the best top_n (an extension; text-embeddings-inference ignores it)"}
                    }
                },
                "TeiRank": {
                    "type": "object", "required": ["index", "score"],
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "score": {"type": "number"},
                        "text": {"type": "string"}
                    }
                },
                "CohereRequest": {
                    "type": "object", "required": ["query", "documents"],
                    "properties": {
                        "model": {"type": "string", "nullable": true, "description": "ignored: the served model answers"},
                        "query": {"type": "string"},
                        "documents": {"type": "array", "minItems": 1, "items": {"oneOf": [
                            {"type": "string"},
                            {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
                        ]}},
                        "top_n": {"type": "integer", "minimum": 1, "nullable": true},
                        "return_documents": {"type": "boolean", "nullable": true, "default": false, "description": "include each document as {text}; on POST /rerank never (Infinity's and vLLM's clients disagree on its type)"},
                        "raw_scores": {"type": "boolean", "nullable": true, "default": false, "description": "raw logits as relevance_score (Infinity's field)"},
                        "max_tokens_per_doc": {"type": "integer", "minimum": 1, "nullable": true, "description": "Cohere v2: cut each document to its first max_tokens_per_doc tokens before pairing it with the query (default: no limit)"},
                        "max_chunks_per_doc": {"type": "integer", "minimum": 1, "nullable": true, "description": "Cohere v1: a document too long for one pair is scored in at most this many overlapping windows, its score the best window's (default: the server's --long-documents and --max-chunks-per-doc)"},
                        "truncate": {"type": "boolean", "nullable": true, "description": "cut over-long pairs (text-embeddings-inference's field, an extension); default: the server's --auto-truncate (on). false: an over-long pair is a 422"}
                    }
                },
                "CohereResponse": {
                    "type": "object", "required": ["id", "object", "created", "model", "results", "usage"],
                    "properties": {
                        "id": {"type": "string"},
                        "object": {"type": "string", "enum": ["rerank"]},
                        "created": {"type": "integer", "description": "Unix time, seconds"},
                        "model": {"type": "string"},
                        "results": {"type": "array", "items": {
                            "type": "object", "required": ["index", "relevance_score"],
                            "properties": {
                                "index": {"type": "integer", "minimum": 0},
                                "relevance_score": {"type": "number", "description": "sigmoid score in (0, 1); the raw logit with raw_scores"},
                                "document": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
                                "window": {"type": "object", "required": ["index", "count", "start", "end"], "description": "only when chunking split the document: the window that gave the score", "properties": {
                                    "index": {"type": "integer", "minimum": 0, "description": "the window's number, from 0"},
                                    "count": {"type": "integer", "minimum": 2, "description": "windows the document was scored in"},
                                    "start": {"type": "integer", "minimum": 0, "description": "first character of the window in the document (Unicode scalar values)"},
                                    "end": {"type": "integer", "minimum": 0, "description": "one past its last character"}
                                }}
                            }
                        }},
                        "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"], "properties": {
                            "prompt_tokens": {"type": "integer", "description": "tokens fed to the model, special tokens included"},
                            "total_tokens": {"type": "integer", "description": "equal to prompt_tokens"}
                        }}
                    }
                },
                "NimRequest": {
                    "type": "object", "required": ["query", "passages"],
                    "properties": {
                        "model": {"type": "string", "nullable": true, "description": "ignored: the served model answers"},
                        "query": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
                        "passages": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}},
                        "truncate": {"type": "string", "enum": ["NONE", "END"], "nullable": true, "description": "NONE: an over-long pair is a 422; END: cut the passage's end; default: the server's --auto-truncate"}
                    }
                },
                "NimResponse": {
                    "type": "object", "required": ["rankings"],
                    "properties": {"rankings": {"type": "array", "items": {
                        "type": "object", "required": ["index", "logit"],
                        "properties": {"index": {"type": "integer", "minimum": 0}, "logit": {"type": "number", "description": "raw logit"}}
                    }}}
                },
                "ModelCard": {
                    "type": "object",
                    "required": ["id", "object", "created", "owned_by", "model_type", "model_name", "model_uid", "model_ability", "max_input_length"],
                    "properties": {
                        "id": {"type": "string", "description": "the served name"},
                        "object": {"type": "string", "enum": ["model"]},
                        "created": {"type": "integer", "description": "Unix time the server started"},
                        "owned_by": {"type": "string"},
                        "model_type": {"type": "string", "enum": ["rerank"]},
                        "model_name": {"type": "string"},
                        "model_uid": {"type": "string"},
                        "model_ability": {"type": "array", "items": {"type": "string"}},
                        "max_input_length": {"type": "integer"}
                    }
                },
                "ModelList": {
                    "type": "object", "required": ["object", "data"],
                    "properties": {"object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/ModelCard"}}}
                },
                "Info": {
                    "type": "object",
                    "properties": {
                        "model_id": {"type": "string", "description": "what --model loaded (hub id or directory)"},
                        "model_sha": {"type": "string", "nullable": true},
                        "model_dtype": {"type": "string"},
                        "served_model_name": {"type": "string"},
                        "model_type": {"type": "object", "description": "text-embeddings-inference's: {\"reranker\": {\"id2label\": {\"0\": \"LABEL_0\"}, \"label2id\": {\"LABEL_0\": 0}}}", "required": ["reranker"], "properties": {"reranker": {"type": "object", "properties": {
                            "id2label": {"type": "object", "additionalProperties": {"type": "string"}},
                            "label2id": {"type": "object", "additionalProperties": {"type": "integer"}}
                        }}}},
                        "model_device": {"type": "string"},
                        "model_implementation": {"type": "string", "description": "cpu-f32, cpu-bf16, cpu-int8 (the hand-written CPU model) or candle"},
                        "kernels": {"type": "string", "description": "the CPU kernels in use, e.g. int8=vnni bf16=avx512bf16 small-f32=avx512; absent off CPU"},
                        "layer_precision": {"type": "string", "description": "bf16 and int8 on CPU: which precision each class of linear layers and attention's products run in and why, e.g. q/k/v, ffn-in int8; attn-out/ffn-out bf16 (AMX); attention bf16 (AMX); absent otherwise"},
                        "max_input_length": {"type": "integer"},
                        "max_client_batch_size": {"type": "integer"},
                        "max_batch_tokens": {"type": "integer"},
                        "max_batch_pairs": {"type": "integer"},
                        "max_concurrent_requests": {"type": "integer"},
                        "max_queued_pairs": {"type": "integer"},
                        "payload_limit": {"type": "integer"},
                        "auto_truncate": {"type": "boolean"},
                        "max_batch_requests": {"type": "integer", "nullable": true, "description": "null: pairs of any number of requests share a forward pass"},
                        "tokenization_workers": {"type": "integer"},
                        "version": {"type": "string"},
                        "sha": {"type": "string", "nullable": true},
                        "docker_label": {"type": "string", "nullable": true},
                        "score_cache": score_cache,
                        "memory": memory
                    }
                }
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/": {"get": {
                "summary": "The playground: an HTML page to rank passages by hand, calling POST /v1/rerank (no API key needed to load it; --no-playground turns it off, 404)",
                "security": [],
                "responses": {
                    "200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}},
                    "404": {"description": "the server runs with --no-playground", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                }
            }},
            "/rerank": {"post": {
                "summary": "Rerank texts: text-embeddings-inference's schema (a body with texts), or the Cohere schema (a body with documents, as Infinity and vLLM serve it here; its answer never carries the documents)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/TeiRequest"},
                    {"$ref": "#/components/schemas/CohereRequest"}
                ]}}}},
                "responses": rerank_responses(json!({
                    "description": "texts sorted by score, best first, cut to top_n (TeiRank list); for a Cohere body, a CohereResponse",
                    "headers": timing.clone(),
                    "content": {"application/json": {"schema": {"oneOf": [
                        {"type": "array", "items": {"$ref": "#/components/schemas/TeiRank"}},
                        {"$ref": "#/components/schemas/CohereResponse"}
                    ]}}}
                }))
            }},
            "/v1/ranking": {"post": {
                "summary": "Rerank passages (NVIDIA NIM schema): raw logits, best first",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NimRequest"}}}},
                "responses": rerank_responses(json!({
                    "description": "rankings sorted by logit, best first",
                    "headers": timing,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NimResponse"}}}
                }))
            }},
            "/v1/models": {"get": {
                "summary": "The served model, OpenAI-style",
                "responses": {"200": {"description": "one model", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelList"}}}}}
            }},
            "/v1/models/{id}": {"get": {
                "summary": "The served model by its served name or --model id (Xinference's lookup; the id may contain /)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the model", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelCard"}}}},
                    "404": {"description": "not the served model", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                }
            }},
            "/v1/cluster/auth": {"get": {
                "summary": "Xinference's: whether the server needs an API key (no API key needed to ask)",
                "security": [],
                "responses": {"200": {"description": "auth", "content": {"application/json": {"schema": {"type": "object", "required": ["auth"], "properties": {"auth": {"type": "boolean"}}}}}}}
            }},
            "/v1/rerank": {"post": cohere},
            "/v2/rerank": {"post": cohere},
            "/health": {"get": probe(
                "text-embeddings-inference's health check: 200 while the model computes (its last forward pass succeeded) and the server is not shutting down; answered at once, never behind the queue (no API key needed)"
            )},
            "/live": {"get": probe(
                "Liveness (Kubernetes livenessProbe): 200 while the model thread is alive and shows progress within --liveness-timeout (no API key needed)"
            )},
            "/ready": {"get": probe(
                "Readiness (Kubernetes readinessProbe): 200 while live, the model computes, the server is not draining and the admitted pairs are under --ready-max-queued-pairs (no API key needed)"
            )},
            "/info": {"get": {
                "summary": "Model and limits",
                "responses": {"200": {"description": "model and limits", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Info"}}}}}
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}
            }},
            "/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.0", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}
        }
    })
}
