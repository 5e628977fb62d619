#!/usr/bin/env python3
"""Scripted fake of the Anthropic Messages API, for driving a real agent CLI
(e.g. Claude Code) in integration tests without network access.

    fake_messages_api.py --port-file PORTFILE --script SCRIPT.json [--log LOG.jsonl]

SCRIPT.json is a list of turns; each turn is a list of content blocks:
    {"type": "text", "text": "..."}
    {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "..."}}
    {"type": "delay", "secs": 5}   (holds the turn's answer back; not sent)
A turn containing a tool_use block ends with stop_reason "tool_use", otherwise
"end_turn".  Only main-loop requests (requests that carry a non-empty `tools`
list) consume turns; side requests (title/topic generation, quota probes, ...)
get a short text answer.  Once the script is exhausted every main-loop request
gets the text "done".

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
    "user-agent", "x-api-key", "authorization", "anthropic-version",
    "anthropic-beta", "content-type", "x-app", "x-stainless-helper-method",
    "x-claude-code-session-id", "accept",
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


def usage_for(body, output_tokens):
    raw = json.dumps(body.get("messages", [])) if isinstance(body, dict) else ""
    n_in = max(1, len(raw) // 4)
    return {
        "input_tokens": n_in,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0 if n_in < 100 else 100,
        "cache_read_input_tokens": 0 if n_in < 200 else n_in // 2,
    }


def out_tokens(blocks):
    return max(1, len(json.dumps(blocks)) // 4)


def stop_reason(blocks):
    return "tool_use" if any(b.get("type") == "tool_use" for b in blocks) else "end_turn"


def message_obj(model, blocks, usage):
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason(blocks),
        "stop_sequence": None,
        "usage": usage,
    }


def sse_events(model, blocks, usage):
    start = message_obj(model, [], dict(usage, output_tokens=1))
    start["stop_reason"] = None
    yield "message_start", {"type": "message_start", "message": start}
    for i, b in enumerate(blocks):
        if b.get("type") == "tool_use":
            head = {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(b.get("input", {}))}
        else:
            head = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": b.get("text", "")}
        yield "content_block_start", {"type": "content_block_start", "index": i, "content_block": head}
        yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": i}
    yield "message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason(blocks), "stop_sequence": None},
        "usage": usage,
    }
    yield "message_stop", {"type": "message_stop"}


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
        self.send_header("request-id", "req_" + uuid.uuid4().hex[:24])
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._log(None, "other", None)
        if self.path.split("?")[0].startswith("/v1/models"):
            self._json(200, {"data": [], "has_more": False, "first_id": None, "last_id": None})
        else:
            self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "not found"}})

    def do_HEAD(self):
        self._log(None, "other", None)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self):
        path = self.path.split("?")[0]
        body = self._body()
        if path == "/v1/messages/count_tokens":
            self._log(body, "other", None)
            self._json(200, {"input_tokens": usage_for(body or {}, 0)["input_tokens"]})
            return
        if path != "/v1/messages":
            self._log(body, "other", None)
            self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "not found"}})
            return
        body = body if isinstance(body, dict) else {}
        if is_main_loop(body):
            turn, blocks = next_turn()
            kind = "main"
        else:
            turn, blocks, kind = None, [{"type": "text", "text": "ok"}], "side"
        self._log(body, kind, turn)
        # {"type": "delay", "secs": N} in a turn holds its answer back (the test acts meanwhile).
        time.sleep(sum(float(b.get("secs", 0)) for b in blocks if b.get("type") == "delay"))
        blocks = [b for b in blocks if b.get("type") != "delay"]
        model = body.get("model", "claude-sonnet-4-5")
        usage = usage_for(body, out_tokens(blocks))
        if not body.get("stream"):
            self._json(200, message_obj(model, blocks, usage))
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", "req_" + uuid.uuid4().hex[:24])
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        for name, data in sse_events(model, blocks, usage):
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()


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
