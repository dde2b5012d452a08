"""A fake OpenAI-compatible completions server for the serving tests' injected faults:
`python fake_server.py MODE PORT`. MODE: ok (streams max_tokens tokens, TTFT_MS then
TPOT_MS apart), merged (two tokens a chunk, the count in a final usage chunk), exit (fails before listening), hang (healthy, then stops mid-answer,
with a child process in its group), hang-one (the third request hangs, the others are answered),
error (healthy, every completion a 500)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TTFT_MS, TPOT_MS = 40, 15
LOG = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    mode = "ok"
    served = 0  # completions asked for so far

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        if self.path == "/health":
            self._json(200, {"status": "ok"})
        else:
            self._json(404, {"error": "no such path"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with LOG:  # one line a request, whole, whichever thread serves it
            sys.stdout.write(f"prompt {body['prompt']}\n")
            sys.stdout.flush()
            Handler.served += 1
            hang_this = self.mode == "hang" or (self.mode == "hang-one" and Handler.served == 3)
        if self.mode == "error":
            self._json(500, {"error": "fake: CUDA error: an illegal memory access was encountered"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        time.sleep(TTFT_MS / 1e3)
        per_chunk = 2 if self.mode == "merged" else 1  # merged: two tokens a chunk, as a split UTF-8 character makes
        for i in range(0, body["max_tokens"], per_chunk):
            if i:
                time.sleep(TPOT_MS / 1e3)
            self._event({"choices": [{"index": 0, "text": f" t{i}"}]})
            if hang_this:
                time.sleep(3600)
        if (body.get("stream_options") or {}).get("include_usage"):
            self._event({"choices": [], "usage": {"completion_tokens": body["max_tokens"]}})
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, obj):
        self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
        self.wfile.flush()

    def _json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "exit":
        print("fake: could not load the weights: file is truncated", file=sys.stderr)
        sys.exit(3)
    if mode == "hang":  # a child in the server's group: killed with it, or left behind
        child = subprocess.Popen(["sleep", "600"])
        print(f"child {child.pid}", flush=True)
    Handler.mode = mode
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
