#!/usr/bin/env bash
# Builds the image with podman and checks it as a user would use it, on the
# tiny test model: `/rerank` equals `rerank rank`, the demo runs inside it,
# the HEALTHCHECK passes, `podman stop` (SIGTERM) exits 0 at once, and the
# image is at most 250 MiB.
#
#   bash deploy/test-image.sh          # IMAGE=localhost/rerank:test, work files under /tmp/rerank-image
#
# Works offline from any registry: where the base images of the Dockerfile
# cannot be pulled it builds local stand-ins under their names (a debootstrap
# rootfs; Debian's rustc-web for the Rust one), as ../shared/CONTAINERS.md
# describes, and lends the host's CA bundle to the build (registry traffic
# may be re-signed by a proxy). Needs root, podman, buildah, debootstrap and
# runc (installed with apt-get when missing). Not run by CI: it compiles the
# whole project inside the build (about 10 minutes on 2 cores).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-localhost/rerank:test}"
WORK="${WORK:-/tmp/rerank-image}"
NAME="rerank-image-test-$$"
MAX_MIB=250
mkdir -p "$WORK"
log() { echo "== $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# 1. podman, with the two settings these sandboxes need.
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null || ! command -v runc >/dev/null; then
    log "installing podman, buildah, debootstrap, runc"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah debootstrap runc >/dev/null
fi
cat > "$WORK/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$WORK/containers.conf"

# 2. The base images named by the Dockerfile's FROM lines, or stand-ins.
RUST_VERSION=$(sed -n 's/^ARG RUST_VERSION=//p' "$ROOT/Dockerfile")
DEBIAN=$(sed -n 's/^ARG DEBIAN=//p' "$ROOT/Dockerfile")
RUNTIME_BASE="docker.io/library/debian:$DEBIAN-slim"
RUST_BASE="docker.io/library/rust:$RUST_VERSION-slim-$DEBIAN"
have() { podman image exists "$1"; }
if ! have "$RUNTIME_BASE" && ! podman pull -q "$RUNTIME_BASE" >/dev/null 2>&1; then
    log "no registry: building a stand-in for $RUNTIME_BASE (debootstrap)"
    mirror=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=ca-certificates "$DEBIAN" "$WORK/rootfs" "${mirror:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log"
    # Trimmed as the official slim image is (no package caches, docs, man
    # pages or locales), so the image size measured here is close to the real one.
    rm -rf "$WORK"/rootfs/var/cache/apt/* "$WORK"/rootfs/var/lib/apt/lists/* \
        "$WORK"/rootfs/usr/share/doc/* "$WORK"/rootfs/usr/share/man/* "$WORK"/rootfs/usr/share/locale/* \
        "$WORK"/rootfs/usr/share/info/*
    printf 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\nAPT::Update::Post-Invoke { "rm -f /var/cache/apt/*.bin || true"; };\nDir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n' \
        > "$WORK/rootfs/etc/apt/apt.conf.d/docker-clean"
    tar -C "$WORK/rootfs" --numeric-owner -c . | podman import -q - localhost/debian-base >/dev/null
    podman tag localhost/debian-base "$RUNTIME_BASE"
    rm -rf "$WORK/rootfs"
fi
if ! have "$RUST_BASE" && ! podman pull -q "$RUST_BASE" >/dev/null 2>&1; then
    log "no registry: building a stand-in for $RUST_BASE (Debian's rustc-web)"
    cat > "$WORK/Containerfile.rust" <<STANDIN
FROM $RUNTIME_BASE
RUN printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: $DEBIAN $DEBIAN-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: $DEBIAN-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > /etc/apt/sources.list.d/debian.sources \
    && apt-get update && apt-get install -y --no-install-recommends rustc-web cargo-web gcc libc6-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
STANDIN
    podman build -q --pull=never -t "$RUST_BASE" -f "$WORK/Containerfile.rust" "$WORK" >/dev/null
fi

# 3. The image, as `docker build -t rerank .` builds it.
log "podman build -t $IMAGE . (log: $WORK/build.log)"
ca=()
[ -f /etc/ssl/certs/ca-certificates.crt ] && ca=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
start=$(date +%s)
podman build --pull=never --format docker "${ca[@]}" -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log"; fail "the image does not build"; }
log "built in $(( $(date +%s) - start )) s"

# 4. Run it on the tiny model, as the README says.
query="中国的首都是哪里？"
texts=("北京是中国的政治中心和首都。" "上海是中国最大的城市，经济发达。" "首都机场位于北京，是中国重要交通枢纽。")
# [[index, score]] best first, from the server's /rerank and from `rerank rank --json`.
served_scores() {
    python3 - "$base" "$query" "${texts[@]}" <<'PY'
import json, sys, urllib.request
base, query, texts = sys.argv[1], sys.argv[2], sys.argv[3:]
req = urllib.request.Request(f"{base}/rerank", json.dumps({"query": query, "texts": texts}).encode(), {"Content-Type": "application/json"})
print(json.dumps([[r["index"], round(r["score"], 6)] for r in json.load(urllib.request.urlopen(req))]))
PY
}
ranked_scores() { python3 -c 'import json, sys; print(json.dumps([[r["index"], round(r["score"], 6)] for r in json.load(sys.stdin)]))'; }
wait_ready() {
    for _ in $(seq 1 60); do
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$base/ready" 2>/dev/null && return 0
        [ "$(podman inspect --format '{{.State.Running}}' "$NAME")" = true ] || { podman logs "$NAME"; fail "the container exited"; }
        sleep 0.5
    done
    fail "the container was not ready within 30 s"
}
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() { podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
log "podman run -p 127.0.0.1:$port:8080 -v tests/fixtures/tiny:/model:ro -e RERANK_MODEL=/model $IMAGE"
podman run -d --name "$NAME" -p "127.0.0.1:$port:8080" -v "$ROOT/tests/fixtures/tiny:/model:ro" -e RERANK_MODEL=/model -e RUST_LOG=info "$IMAGE" >/dev/null
base="http://127.0.0.1:$port"
wait_ready
log "HEALTHCHECK (rerank health inside the container)"
podman healthcheck run "$NAME" 2>/dev/null || fail "the health check failed"
[ "$(podman exec "$NAME" id -u)" = 10001 ] || fail "the server does not run as uid 10001"

log "POST /rerank equals rerank rank (the image's own binary)"
served=$(served_scores)
ranked=$(podman exec "$NAME" rerank rank --model /model --json --query "$query" "${texts[@]}" | ranked_scores)
echo "   server: $served"
echo "   rank:   $ranked"
[ "$served" = "$ranked" ] || fail "/rerank and rerank rank disagree"
if [ -x "$ROOT/target/release/rerank" ]; then
    host=$("$ROOT/target/release/rerank" rank --model "$ROOT/tests/fixtures/tiny" --json --query "$query" "${texts[@]}" | ranked_scores)
    echo "   host binary: $host"
    [ "$served" = "$host" ] || fail "the image and the host binary disagree"
fi

log "rerank demo inside the image"
podman exec "$NAME" rerank demo --model /model | tee "$WORK/demo.txt" | sed -n '1,12p'
grep -q "demo 2 (the guide's test2.py)" "$WORK/demo.txt" || fail "the demo did not run"

log "podman stop (SIGTERM): exits 0, drained, no kill"
start=$(date +%s%N)
podman stop -t 20 "$NAME" >/dev/null
ms=$(( ($(date +%s%N) - start) / 1000000 ))
code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
echo "   stopped in $ms ms, exit code $code"
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
[ "$ms" -lt 10000 ] || fail "stop took $ms ms: SIGTERM was not handled"
podman logs "$NAME" 2>&1 | grep -q "draining" || fail "the server log shows no drain"

# 5. A model baked in at build time (--build-arg MODEL=…), downloaded from a
#    loopback stand-in for the hub that serves the tiny model as test/tiny.
log "--build-arg MODEL=test/tiny (from deploy/fake_hub.py): the image serves it with no mount, offline"
hub_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 "$ROOT/deploy/fake_hub.py" "$ROOT/tests/fixtures/tiny" test/tiny "$hub_port" &
hub_pid=$!
trap 'cleanup; kill $hub_pid 2>/dev/null || true' EXIT
sleep 0.5
podman build --pull=never --format docker --network host "${ca[@]}" --build-arg MODEL=test/tiny \
    --build-arg HF_ENDPOINT="http://127.0.0.1:$hub_port" -t "$IMAGE-baked" "$ROOT" >"$WORK/build-baked.log" 2>&1 \
    || { tail -20 "$WORK/build-baked.log"; fail "the image with a baked model does not build"; }
kill "$hub_pid" 2>/dev/null || true
podman rm -f -t 0 "$NAME" >/dev/null
podman run -d --name "$NAME" -p "127.0.0.1:$port:8080" -e HF_HUB_OFFLINE=1 "$IMAGE-baked" >/dev/null
wait_ready
baked=$(served_scores)
echo "   baked:  $baked"
[ "$baked" = "$served" ] || fail "the baked model scores differently"
podman stop -t 20 "$NAME" >/dev/null
baked_mib=$(( $(podman image inspect --format '{{.Size}}' "$IMAGE-baked") / 1024 / 1024 ))
echo "   $IMAGE-baked: $baked_mib MiB"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
mib=$(( size / 1024 / 1024 ))
log "image size: $mib MiB (limit $MAX_MIB MiB; with stand-in bases it is only an estimate of the real one)"
podman history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | grep -v '^0 B' | cut -c1-100
[ "$mib" -le "$MAX_MIB" ] || fail "the image is $mib MiB, over $MAX_MIB MiB"
log "all image checks passed ($IMAGE, $mib MiB)"
