"""The native stack test's stand-in for Ollama's chat (Ollama cannot run here): an
OpenAI-compatible server that streams /v1/chat/completions the way Ollama does (role deltas, an
empty final delta with finish_reason "stop", a usage chunk with choices [] when asked, then
data: [DONE]), and answers Ollama's own /api/tags so the readiness checks see a server.
The answer is "Stack answer: " and the last user message's words, one chunk per word, paced so
the agent's streamed edits show. Loopback only; a test fixture, never part of the image."""

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "stack-fake:latest"
WORD_DELAY = 0.15


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: the test prints what matters
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/api/tags":
            self.reply(200, {"models": [{"name": MODEL, "model": MODEL, "size": 0}]})
        elif self.path == "/v1/models":
            self.reply(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "library"}]})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path != "/v1/chat/completions":
            self.reply(404, {"error": {"message": "not found"}})
            return
        user = next((m.get("content") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        if isinstance(user, list):
            user = " ".join(p.get("text", "") for p in user if isinstance(p, dict))
        # The question is the user message's last line (the agent puts room context above it).
        question = (user.strip().splitlines() or [""])[-1][:200]
        words = f"Stack answer: {question} — streamed word by word, so the agent edits its message as the words arrive.".split(" ")
        if not body.get("stream"):
            self.reply(200, {"id": "chatcmpl-1", "object": "chat.completion", "model": body.get("model"),
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                                          "finish_reason": "stop"}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()

        def chunk(content, finish=None):
            event = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": body.get("model"), "system_fingerprint": "fp_ollama",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": content},
                                  "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()

        for i, word in enumerate(words):
            chunk(word if i == len(words) - 1 else word + " ")
            time.sleep(WORD_DELAY)
        chunk("", "stop")
        if body.get("stream_options", {}).get("include_usage"):
            usage = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
                     "usage": {"prompt_tokens": 10, "completion_tokens": len(words), "total_tokens": 10 + len(words)}}
            self.wfile.write(f"data: {json.dumps(usage)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
