#!/usr/bin/env python3
"""Run the README's "Use it from your framework" snippets against a running server.

    python3 readme_snippets.py --base http://127.0.0.1:PORT [--venvs DIR] [--readme README.md]

Each snippet is a ```python block right after a `<!-- client: GROUP -->` line; it
runs unchanged but for `http://localhost:8080`, replaced by --base, with the
Python of venv GROUP (made by run.sh). It passes when it exits 0 and prints the
engine's best document (from the server's plain /rerank) on its first line; the
snippets send the key `my-key`, so run the server with `--api-key my-key` or none.
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
SNIPPET = re.compile(r"<!-- client: (\w+) -->\n```python\n(.*?)```", re.S)
# The query and documents every snippet uses.
QUERY = "中国的首都是哪里？"
DOCS = ["北京是中国的政治中心和首都。", "首都机场很大。", "hi"]


def best_document(base):
    req = urllib.request.Request(
        f"{base}/rerank",
        data=json.dumps({"query": QUERY, "texts": DOCS}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer my-key"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return DOCS[json.load(resp)[0]["index"]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--venvs", default=os.environ.get("RERANK_CLIENTS_VENVS", str(pathlib.Path.home() / ".cache/rerank-clients")))
    ap.add_argument("--readme", default=str(HERE.parent.parent / "README.md"))
    args = ap.parse_args()
    base = args.base.rstrip("/")

    snippets = SNIPPET.findall(pathlib.Path(args.readme).read_text())
    if not snippets:
        print(f"no `<!-- client: … -->` snippets in {args.readme}", file=sys.stderr)
        return 2
    best = best_document(base)
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")  # litellm: no price-list download
    failed = 0
    for group, code in snippets:
        first = next(line for line in code.splitlines() if line.startswith(("import", "from")))
        python = pathlib.Path(args.venvs) / group / "bin" / "python"
        run = subprocess.run([str(python), "-c", code.replace("http://localhost:8080", base)],
                             capture_output=True, text=True, timeout=300, env=env)
        lines = run.stdout.splitlines()
        ok = run.returncode == 0 and lines and best in lines[0]
        failed += not ok
        print(f"{'OK  ' if ok else 'FAIL'}  {group:<11} {first}")
        if not ok:
            print("      stdout: " + " | ".join(lines[:3]))
            print("      stderr: " + " | ".join(run.stderr.strip().splitlines()[-3:]))
    print(f"{len(snippets) - failed} of {len(snippets)} README snippets printed the engine's best document first")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
