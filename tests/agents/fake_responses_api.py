#!/usr/bin/env python3
"""Scripted fake of the OpenAI Responses API, for driving a real agent CLI (e.g. Codex CLI,
through a custom model provider whose base_url is this server's /v1) in integration tests
without network access.

    fake_responses_api.py --port-file PORTFILE --script SCRIPT.json [--log LOG.jsonl]

SCRIPT.json is a list of turns; each turn is a list of output blocks:
    {"type": "text", "text": "..."}
    {"type": "tool_call", "call_id": "call_1", "name": "exec_command", "arguments": {"cmd": "..."}}
    {"type": "delay", "secs": 5}   (holds the turn's answer back; not sent)
Each `POST /v1/responses` that offers tools (a main-loop request) consumes one turn; other
requests (e.g. a compaction or title request without tools) get a short text answer. Once
the script is exhausted every main-loop request gets the text "done". The answer is a
server-sent event stream: response.created, then per block response.output_item.added /
(response.output_text.delta) / response.output_item.done, then response.completed with usage.
Other paths: GET /v1/models answers an empty list, any other POST (e.g. Codex's
/v1/analytics/... reports) 200 with `{}`, any other GET 404.

Every request is appended to the log as one JSON line:
    {"ts", "method", "path", "headers": {...subset...}, "body": <json or text>,
     "kind": "main" | "side" | "other", "turn": <index or null>}

Python 3 stdlib only.
"""
import argparse
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG_HEADERS = (
    "user-agent", "authorization", "originator", "content-type", "accept", "session_id",
    "x-codex-turn-metadata", "x-codex-window-id",
)

STATE = {"script": [], "next": 0, "log": None}
LOCK = threading.Lock()


def is_main_loop(body):
    """Main-loop requests offer tools to the model; side requests do not."""
    return isinstance(body, dict) and bool(body.get("tools"))


def next_turn():
    with LOCK:
        i = STATE["next"]
        if i < len(STATE["script"]):
            STATE["next"] += 1
            return i, STATE["script"][i]
        return None, [{"type": "text", "text": "done"}]


def usage_for(body, blocks):
    raw = json.dumps(body.get("input", [])) if isinstance(body, dict) else ""
    n_in = max(1, len(raw) // 4)
    n_out = max(1, len(json.dumps(blocks)) // 4)
    cached = 0 if n_in < 200 else n_in // 2
    return {
        "input_tokens": n_in,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": n_out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": n_in + n_out,
    }


def item_for(b, i):
    if b.get("type") == "tool_call":
        args = b.get("arguments", {})
        return {
            "type": "function_call",
            "id": "fc_" + uuid.uuid4().hex[:16],
            "call_id": b.get("call_id") or "call_%d" % i,
            "name": b.get("name", "exec_command"),
            "arguments": args if isinstance(args, str) else json.dumps(args),
            "status": "completed",
        }
    return {
        "type": "message",
        "id": "msg_" + uuid.uuid4().hex[:16],
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": b.get("text", ""), "annotations": []}],
    }


def sse_events(model, blocks, usage):
    rid = "resp_" + uuid.uuid4().hex[:24]
    head = {"id": rid, "object": "response", "created_at": int(time.time()), "model": model,
            "status": "in_progress", "output": []}
    yield {"type": "response.created", "response": head}
    items = []
    for i, b in enumerate(blocks):
        item = item_for(b, i)
        items.append(item)
        if item["type"] == "message":
            start = dict(item, status="in_progress", content=[])
            yield {"type": "response.output_item.added", "output_index": i, "item": start}
            yield {"type": "response.output_text.delta", "output_index": i, "item_id": item["id"],
                   "content_index": 0, "delta": item["content"][0]["text"]}
        else:
            start = dict(item, status="in_progress", arguments="")
            yield {"type": "response.output_item.added", "output_index": i, "item": start}
        yield {"type": "response.output_item.done", "output_index": i, "item": item}
    yield {"type": "response.completed",
           "response": dict(head, status="completed", output=items, usage=usage)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep stderr quiet
        pass

    def _body(self):
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _log(self, body, kind, turn):
        rec = {
            "ts": time.time(),
            "method": self.command,
            "path": self.path,
            "headers": {k: v for k, v in self.headers.items() if k.lower() in LOG_HEADERS},
            "body": body,
            "kind": kind,
            "turn": turn,
        }
        if STATE["log"]:
            with LOCK, open(STATE["log"], "a") as f:
                f.write(json.dumps(rec) + "\n")

    def _json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("x-request-id", "req_" + uuid.uuid4().hex[:24])
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._log(None, "other", None)
        if self.path.split("?")[0].startswith("/v1/models"):
            self._json(200, {"object": "list", "data": [], "models": []})
        else:
            self._json(404, {"error": {"type": "not_found", "message": "not found"}})

    def do_HEAD(self):
        self._log(None, "other", None)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self):
        path = self.path.split("?")[0]
        body = self._body()
        if path != "/v1/responses":
            self._log(body, "other", None)
            self._json(200, {})
            return
        body = body if isinstance(body, dict) else {}
        if is_main_loop(body):
            turn, blocks = next_turn()
            kind = "main"
        else:
            turn, blocks, kind = None, [{"type": "text", "text": "ok"}], "side"
        self._log(body, kind, turn)
        time.sleep(sum(float(b.get("secs", 0)) for b in blocks if b.get("type") == "delay"))
        blocks = [b for b in blocks if b.get("type") != "delay"]
        model = body.get("model", "gpt-5-mock")
        events = sse_events(model, blocks, usage_for(body, blocks))
        data = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("x-request-id", "req_" + uuid.uuid4().hex[:24])
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--script", required=True)
    ap.add_argument("--log")
    a = ap.parse_args()
    with open(a.script) as f:
        STATE["script"] = json.load(f)
    STATE["log"] = a.log
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.replace(tmp, a.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
