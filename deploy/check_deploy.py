#!/usr/bin/env python3
"""Offline checks that schema validation cannot make (run by deploy/validate.sh).

  check_deploy.py compose FILE SCHEMA   compose FILE against the Compose
                                        Specification JSON schema, after
                                        ${VAR:-default} interpolation
  check_deploy.py k8s NAME FILE         consistency of one rendered
                                        kustomization: selectors, named ports,
                                        references, drain timing, probes,
                                        pod security

Prints one line per problem and exits 1 if there was any.
"""

import json
import re
import sys

import yaml

problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


# --- compose ---------------------------------------------------------------

VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value):
    """Compose's interpolation with every variable unset (defaults apply)."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        op, arg = m.group(2), m.group(3)
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise ValueError(f"required variable {m.group(1)} is unset: {arg}")
        return ""

    return VAR.sub(sub, value)


def check_compose(path, schema_path):
    import jsonschema

    with open(path) as f:
        doc = yaml.safe_load(f)
    with open(schema_path) as f:
        schema = json.load(f)
    try:
        doc = interpolate(doc)
    except ValueError as e:
        problem(path, str(e))
        return
    validator = jsonschema.Draft7Validator(schema)
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        loc = "/".join(str(p) for p in err.path) or "(top)"
        problem(path, f"{loc}: {err.message}")
    services = doc.get("services") or {}
    if not services:
        problem(path, "no services")
    declared = set((doc.get("volumes") or {}).keys())
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            source = vol.get("source") if isinstance(vol, dict) else vol.split(":")[0]
            named = source and not source.startswith((".", "/", "~", "$"))
            if named and source not in declared:
                problem(path, f"services/{name}: volume {source!r} is not declared under volumes:")
        test = (svc.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
            problem(path, f"services/{name}: healthcheck test must start with CMD, CMD-SHELL or NONE")


# --- rendered Kubernetes manifests ---------------------------------------


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def seconds(value, default):
    try:
        return float(str(value).rstrip("s"))
    except (TypeError, ValueError):
        return default


def check_k8s(name, path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    config_maps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    pvcs = by_kind.get("PersistentVolumeClaim", {})
    workloads = {**by_kind.get("Deployment", {}), **by_kind.get("StatefulSet", {})}
    if not workloads:
        problem(name, "no Deployment or StatefulSet rendered")

    pod_labels = {}
    for wname, w in workloads.items():
        where = f"{name}: {w['kind']}/{wname}"
        tmpl = w["spec"]["template"]
        labels = tmpl["metadata"].get("labels", {})
        pod_labels[wname] = labels
        if not matches(w["spec"]["selector"].get("matchLabels"), labels):
            problem(where, "selector.matchLabels do not match the pod template's labels")
        spec = tmpl["spec"]
        pod_sc = spec.get("securityContext", {})
        if not pod_sc.get("runAsNonRoot"):
            problem(where, "securityContext.runAsNonRoot is not true")
        for tsc in spec.get("topologySpreadConstraints", []):
            if not matches(tsc.get("labelSelector", {}).get("matchLabels"), labels):
                problem(where, "a topologySpreadConstraint's labelSelector does not select the pods")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            if claim and claim not in pvcs:
                problem(where, f"volume {v['name']}: PersistentVolumeClaim {claim!r} is not rendered")
        all_containers = spec.get("initContainers", []) + spec["containers"]
        for c in all_containers:
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(cw, "allowPrivilegeEscalation is not false")
            if not sc.get("readOnlyRootFilesystem"):
                problem(cw, "readOnlyRootFilesystem is not true")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problem(cw, "capabilities do not drop ALL")
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problem(cw, "no RuntimeDefault seccomp profile")
            if not c.get("resources", {}).get("limits", {}).get("memory"):
                problem(cw, "no memory limit")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    problem(cw, f"volumeMount {m['name']!r} names no volume")
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef") or ef.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in ef else "Secret"
                pool = config_maps if kind == "ConfigMap" else secrets
                if ref and not ref.get("optional") and ref["name"] not in pool:
                    problem(cw, f"envFrom {kind} {ref['name']!r} is not rendered")
            for e in c.get("env", []):
                src = e.get("valueFrom", {})
                for key, pool, kind in (("configMapKeyRef", config_maps, "ConfigMap"),
                                        ("secretKeyRef", secrets, "Secret")):
                    ref = src.get(key)
                    if ref and not ref.get("optional") and ref["name"] not in pool:
                        problem(cw, f"env {e['name']}: {kind} {ref['name']!r} is not rendered and not optional")
                rf = src.get("resourceFieldRef")
                if rf and rf.get("resource", "").endswith("cpu"):
                    kind, _, res = rf["resource"].partition(".")
                    target = next((x for x in all_containers if x["name"] == rf.get("containerName", c["name"])), None)
                    if target is None or res not in target.get("resources", {}).get(kind, {}):
                        problem(cw, f"env {e['name']} reads {rf['resource']}, which the container does not set "
                                "(it would read the node's allocatable CPU)")

        server = next((c for c in spec["containers"] if c["name"] == "rerank"), None)
        if server is None:
            problem(where, "no container named rerank")
            continue
        env = {e["name"]: e.get("value") for e in server.get("env", [])}
        cfg = {}
        for ef in server.get("envFrom", []):
            ref = ef.get("configMapRef")
            if ref and ref["name"] in config_maps:
                cfg.update(config_maps[ref["name"]].get("data", {}))
        cfg.update({k: v for k, v in env.items() if v is not None})
        if spec.get("enableServiceLinks", True) and "RERANK_PORT" not in env:
            problem(where, "service links would set RERANK_PORT=tcp://...: set enableServiceLinks: false "
                    "or RERANK_PORT explicitly")
        port_names = {p.get("name") for p in server.get("ports", [])}
        port_numbers = {p["containerPort"] for p in server.get("ports", [])}
        if str(cfg.get("RERANK_PORT", "8080")) not in {str(p) for p in port_numbers}:
            problem(where, f"RERANK_PORT={cfg.get('RERANK_PORT')} is not a containerPort")
        for probe, path in (("livenessProbe", "/live"), ("readinessProbe", "/ready"), ("startupProbe", None)):
            p = server.get(probe)
            if not p:
                problem(where, f"no {probe}")
                continue
            get = p.get("httpGet", {})
            if path and get.get("path") != path:
                problem(where, f"{probe} should GET {path}, not {get.get('path')}")
            port = get.get("port")
            if isinstance(port, str) and port not in port_names:
                problem(where, f"{probe} port {port!r} is not a named container port")
        pre_stop = server.get("lifecycle", {}).get("preStop", {})
        sleep = pre_stop.get("sleep", {}).get("seconds", 0)
        cmd = pre_stop.get("exec", {}).get("command", [])
        if len(cmd) == 2 and cmd[0].endswith("sleep"):
            sleep = seconds(cmd[1], 0)
        drain = seconds(cfg.get("RERANK_DRAIN_TIMEOUT", 30), 30)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace <= sleep + drain:
            problem(where, f"terminationGracePeriodSeconds {grace} <= preStop {sleep} s + "
                    f"RERANK_DRAIN_TIMEOUT {drain} s: draining requests would be killed")

    for sname, s in by_kind.get("Service", {}).items():
        sel = s["spec"].get("selector")
        targets = [w for w, labels in pod_labels.items() if matches(sel, labels)]
        if not targets:
            problem(f"{name}: Service/{sname}", "selector matches no pod template")
        for port in s["spec"].get("ports", []):
            tp = port.get("targetPort")
            for w in targets:
                names = {p.get("name") for c in workloads[w]["spec"]["template"]["spec"]["containers"]
                         for p in c.get("ports", [])}
                if isinstance(tp, str) and tp not in names:
                    problem(f"{name}: Service/{sname}", f"targetPort {tp!r} is no named port of {w}")
    for pname, p in by_kind.get("PodDisruptionBudget", {}).items():
        if not any(matches(p["spec"]["selector"].get("matchLabels"), labels) for labels in pod_labels.values()):
            problem(f"{name}: PodDisruptionBudget/{pname}", "selector matches no pod template")
    for hname, h in by_kind.get("HorizontalPodAutoscaler", {}).items():
        ref = h["spec"]["scaleTargetRef"]
        if ref["name"] not in by_kind.get(ref["kind"], {}):
            problem(f"{name}: HorizontalPodAutoscaler/{hname}", f"scaleTargetRef {ref['kind']}/{ref['name']} is not rendered")
        if h["spec"].get("minReplicas", 1) > h["spec"]["maxReplicas"]:
            problem(f"{name}: HorizontalPodAutoscaler/{hname}", "minReplicas > maxReplicas")


def main(argv):
    if len(argv) == 4 and argv[1] == "compose":
        check_compose(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "k8s":
        check_k8s(argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
