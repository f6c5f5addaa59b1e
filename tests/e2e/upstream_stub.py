"""A tiny OpenAI-compatible upstream that misbehaves on purpose, for the
gateway tests (tests/e2e/test_gateway.py).

Why a stub: a real barista replica cannot be made to answer 500, send a
malformed chunk, cut a stream after two chunks or reset the connection on
demand; these are the faults a gateway must survive. Everything a real server
CAN do (answer, be killed, be frozen with SIGSTOP) is tested against real
barista processes instead.

The fault is the first path segment of the request: api_base
http://127.0.0.1:PORT/<mode> makes the gateway POST /<mode>/v1/chat/completions.
Modes: ok (a normal two-chunk stream), slowable (ok, but the next
`stub.slow_next` calls wait 2 s before answering: a straggler for hedging), 500, badjson, cut (two chunks, then
the connection closes mid-body), reset (RST before any answer), hang (no
answer for 30 s). Every request's path and Authorization header is recorded. GET (the
gateway's health check) answers 200, or 503 while `stub.httpd.healthy` is
False."""
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _chunk(text=None, finish=None, usage=None):
    d = {"id": "stub", "object": "chat.completion.chunk", "created": 0, "model": "stub",
         "choices": [{"index": 0, "delta": {"content": text} if text else {},
                      "finish_reason": finish}]}
    if usage:
        d["usage"] = usage
        d["choices"] = []
    return ("data: " + json.dumps(d) + "\n\n").encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send_chunk(self, b):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
        self.wfile.flush()

    def do_GET(self):  # the gateway's active health check: GET <api_base>/models
        self.server.calls.append({"path": self.path, "mode": "GET", "auth": None, "body": ""})
        ok = self.server.healthy
        b = json.dumps({"object": "list", "data": [{"id": "stub", "object": "model"}]} if ok
                       else {"error": {"message": "not ready"}}).encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        mode = self.path.strip("/").split("/")[0]
        self.server.calls.append({"path": self.path, "mode": mode,
                                  "auth": self.headers.get("Authorization"),
                                  "priority": self.headers.get("X-Priority"),
                                  "body": body.decode(errors="replace")})
        if mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if mode == "slowable":
            with self.server.lock:
                slow = self.server.slow_next > 0
                self.server.slow_next -= slow
            if slow:
                time.sleep(2)
        if mode == "hang":
            time.sleep(30)
            self.close_connection = True
            return
        if mode == "500":
            b = json.dumps({"error": {"message": "stub exploded", "type": "server_error"}})
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b.encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if mode == "badjson":
            self._send_chunk(b"data: {this is not json\n\n")
            self._send_chunk(b"")
            return
        try:
            self._stream(mode)
        except OSError:  # the gateway hung up (a cancelled hedge)
            self.close_connection = True

    def _stream(self, mode):
        self._send_chunk(_chunk("Hello"))
        self._send_chunk(_chunk(" stub"))
        if mode == "cut":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self._send_chunk(_chunk(finish="stop"))
        self._send_chunk(_chunk(usage={"prompt_tokens": 5, "completion_tokens": 2,
                                       "total_tokens": 7}))
        self._send_chunk(b"data: [DONE]\n\n")
        self._send_chunk(b"")


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a hung-up gateway (cancelled hedge, reset test) is expected


class Stub:
    def __init__(self):
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.calls = []
        self.httpd.slow_next = 0
        self.httpd.healthy = True
        self.httpd.lock = threading.Lock()
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def base(self, mode):
        return f"http://127.0.0.1:{self.port}/{mode}"

    @property
    def calls(self):
        return self.httpd.calls

    def slow(self, n):
        with self.httpd.lock:
            self.httpd.slow_next = n

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
