#!/usr/bin/env bash
# The playground in a real browser: starts `rerank serve` on the tiny fixture
# twice (without and with --api-key) and runs playground.py, Playwright (PyPI,
# pinned in requirements.txt) driving the system's chromium (Playwright's own
# browser download is not used). CI runs it from .ci/run.
#
#   bash tests/browser/run.sh [--screenshot docs/playground.png]
#
# Env: RERANK_BIN (default target/debug/rerank, built if missing), CHROMIUM
# (default /usr/bin/chromium, installed with apt-get when missing and root or
# sudo allows), PYTHON (default python3.11 or python3).
# A machine that cannot get a browser prints a loud SKIPPED line and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."

screenshot=""
if [ "${1:-}" = "--screenshot" ]; then screenshot=$(realpath -m "$2"); fi

skip() {
    echo "SKIPPED: browser test (no chromium: $1)"
    exit 0
}

chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
    # Without the CJK fonts the prefilled Chinese example renders as boxes.
    packages="chromium fonts-dejavu-core fonts-noto-cjk"
    if [ "$(id -u)" = 0 ]; then apt=(apt-get)
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then apt=(sudo apt-get)
    else skip "$chromium is missing and apt-get needs root (no passwordless sudo)"; fi
    command -v apt-get >/dev/null || skip "$chromium is missing and there is no apt-get"
    echo "== installing $packages with apt-get"
    log=$(mktemp)
    if ! { "${apt[@]}" update -qq && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq $packages; } >"$log" 2>&1; then
        tail -5 "$log"
        skip "apt-get install $packages failed (log above)"
    fi
    [ -x "$chromium" ] || skip "apt-get installed chromium but $chromium is not there"
fi

py=${PYTHON:-$(command -v python3.11 || command -v python3)}
venv=target/browser-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import playwright" 2>/dev/null; then
    rm -rf "$venv"
    "$py" -m venv "$venv" 2>/dev/null || { "$py" -m pip install --quiet --user virtualenv && "$py" -m virtualenv --quiet "$venv"; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/browser/requirements.txt
fi

bin=${RERANK_BIN:-target/debug/rerank}
[ -x "$bin" ] || cargo build --bin rerank
key="browser-test-key"
logs=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Starts a server on a free port (in this shell, so cleanup can stop it).
start() {
    local name=$1; shift
    "$bin" serve --model tests/fixtures/tiny --port 0 "$@" >"$logs/$name.log" 2>&1 &
    pids+=($!)
}
# Prints a started server's base URL once it listens.
url_of() {
    local name=$1 pid=$2 url
    for _ in $(seq 600); do
        url=$(sed -n 's|^listening on \(http://[0-9.:]*\) .*|\1/|p' "$logs/$name.log")
        if [ -n "$url" ]; then echo "$url"; return; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$logs/$name.log" >&2
    echo "the $name server did not start" >&2
    return 1
}
start plain
start keyed --api-key "$key"
plain=$(url_of plain "${pids[0]}")
keyed=$(url_of keyed "${pids[1]}")
echo "== browser test: $plain (no key), $keyed (--api-key), chromium $("$chromium" --version 2>/dev/null | head -1)"
"$venv/bin/python" tests/browser/playground.py --plain "$plain" --keyed "$keyed" --key "$key" \
    --chromium "$chromium" ${screenshot:+--screenshot "$screenshot"}
