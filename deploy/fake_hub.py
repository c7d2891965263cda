#!/usr/bin/env python3
"""A minimal Hugging Face hub on loopback, for testing `--build-arg MODEL=…` offline.

    python3 deploy/fake_hub.py DIR REPO PORT

Serves the files of DIR as model REPO (e.g. test/tiny) at revision `main`: the
repo info API (`/api/models/REPO/revision/main`) and `/REPO/resolve/main/FILE`
with Range requests, the two calls `rerank download` (hf-hub) makes. Point
HF_ENDPOINT at http://127.0.0.1:PORT. deploy/test-image.sh uses it.
"""

import http.server
import json
import pathlib
import sys

DIR, REPO, PORT = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
SHA = "0123456789abcdef0123456789abcdef01234567"
FILES = {p.name: p for p in DIR.iterdir() if p.is_file()}


class Hub(http.server.BaseHTTPRequestHandler):
    def answer(self, body=True):
        if self.path == f"/api/models/{REPO}/revision/main":
            data = json.dumps({"sha": SHA, "siblings": [{"rfilename": n} for n in FILES]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)
            return
        name = self.path.removeprefix(f"/{REPO}/resolve/main/")
        if name == self.path or name not in FILES:
            self.send_error(404, "Entry not found")
            return
        data = FILES[name].read_bytes()
        start, end = 0, len(data) - 1
        ranged = self.headers.get("Range", "").removeprefix("bytes=")
        if ranged:
            a, _, b = ranged.partition("-")
            start, end = int(a), min(int(b) if b else end, end)
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("X-Repo-Commit", SHA)
        self.send_header("ETag", f'"etag-{name}"')
        self.end_headers()
        if body:
            self.wfile.write(data[start:end + 1])

    def do_GET(self):
        self.answer()

    def do_HEAD(self):
        self.answer(body=False)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Hub).serve_forever()
