# rerank: the CPU image.
#
#   docker build -t rerank .
#   docker run -p 8080:8080 -v rerank-cache:/data rerank                    # BAAI/bge-reranker-v2-m3, downloaded once into the volume
#   docker run -p 8080:8080 -v "$PWD/models/bge-reranker-v2-m3:/model:ro" -e RERANK_MODEL=/model rerank
#   docker build -t rerank:bge-m3 --build-arg MODEL=BAAI/bge-reranker-v2-m3 .   # the model baked in (about 2.3 GB more)
#
# Every `rerank serve` flag is an environment variable (-e RERANK_DTYPE=int8, -e RERANK_API_KEY=…);
# `docker run rerank --help` lists them. HF_HOME is /data: mount a volume there so downloaded models
# survive restarts and are shared with Python tools (same cache layout).

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS build
WORKDIR /src
COPY . .
# The caches speed up rebuilds (BuildKit / buildah); the binary is stripped
# (the release profile keeps line tables for benchmarks' backtraces).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin rerank --config profile.release.strip=true \
    && install -D -m 0755 target/release/rerank /out/rerank
# Optionally bake a model into the image: `--build-arg MODEL=BAAI/bge-reranker-v2-m3`
# (and `--build-arg REVISION=<commit>` to pin it). A gated model needs a token:
# add `--mount=type=secret,id=hf_token,env=HF_TOKEN` to the RUN line below and
# build with `--secret id=hf_token,env=HF_TOKEN` (BuildKit); never pass a token
# as a build argument, it would stay in the image's history.
ARG MODEL=""
ARG REVISION=main
# A hub mirror for the download, e.g. --build-arg HF_ENDPOINT=https://hf-mirror.com
ARG HF_ENDPOINT=""
RUN mkdir -p /out/data \
    && if [ -n "$MODEL" ]; then HF_HOME=/out/data /out/rerank download "$MODEL" --revision "$REVISION"; fi

FROM debian:${DEBIAN}-slim
# tini as PID 1 forwards SIGTERM to rerank, which drains and exits 0 once it
# serves; while the model is still loading (a first download can take minutes)
# rerank has no handler yet and a PID 1 would ignore the signal until
# `docker stop` gives up and kills it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && groupadd --system --gid 10001 rerank \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin rerank \
    && install -d -o 10001 -g 10001 /data
COPY --from=build /out/rerank /usr/local/bin/rerank
COPY --from=build --chown=10001:10001 /out/data /data
ARG MODEL=""
# No VOLUME line on purpose: Docker would copy a baked model into a fresh
# anonymous volume on every `docker run`; mount one yourself (-v rerank-cache:/data).
# RERANK_PREPARED_CACHE: bf16's and int8's converted weights, kept in the model volume for the next start.
ENV HF_HOME=/data \
    RERANK_PREPARED_CACHE=/data/prepared \
    RERANK_MODEL=${MODEL:-BAAI/bge-reranker-v2-m3} \
    RERANK_HOST=0.0.0.0 \
    RERANK_PORT=8080
USER 10001:10001
WORKDIR /data
EXPOSE 8080
# The server's own probe client: no curl in the image. The start period
# covers a first download of the full model.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10m --retries=3 CMD ["rerank", "health"]
ENTRYPOINT ["/usr/bin/tini", "--", "rerank"]
CMD ["serve"]
