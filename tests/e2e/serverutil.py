"""Helpers for the `barista serve` end-to-end tests: start the real binary on
a free port, wait for it to be ready, talk raw HTTP, read metrics."""
import os
import re
import signal
import socket
import subprocess
import threading
import time

READY_RE = re.compile(r"ready on http://([^:\s]+):(\d+)")
LISTEN_RE = re.compile(r"listening on http://([^:\s]+):(\d+)")

# ASan builds are several times slower; every wait scales with this.
SLOW = 6.0 if os.environ.get("BARISTA_SANITIZED") == "1" else 1.0


class Server:
    """A running `barista serve`; stderr is collected in self.log."""

    def __init__(self, barista_bin, gguf_path, args=(), env=None, wait_ready=True,
                 threads=2, port=0):
        """gguf_path None: no -m (the args name the models, e.g. --models)."""
        self.log_lines = []
        self._lock = threading.Lock()
        full_env = dict(os.environ)
        for k in list(full_env):
            if k.startswith("BARISTA_") and k not in ("BARISTA_MODELS", "BARISTA_CPU",
                                                      "BARISTA_BIN", "BARISTA_SANITIZED"):
                del full_env[k]
        if env:
            full_env.update(env)
        cmd = [barista_bin, "serve", "--port", str(port)]
        if gguf_path is not None:
            cmd += ["-m", gguf_path]
        cmd += ["--threads", str(threads)] + list(args)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=full_env, text=True,
                                     errors="replace")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = None
        deadline = time.time() + 60 * SLOW
        pat = READY_RE if wait_ready else LISTEN_RE
        while time.time() < deadline:
            m = pat.search(self.log)
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        if self.port is None:
            self.kill()
            raise RuntimeError("server did not start:\n" + self.log)
        self.url = f"http://{self.host}:{self.port}"

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self.log_lines.append(line)

    @property
    def log(self):
        with self._lock:
            return "".join(self.log_lines)

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout=30):
        rc = self.proc.wait(timeout=timeout * SLOW)
        self._reader.join(timeout=5)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                return self.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return self.proc.returncode

    def connect(self, timeout=10):
        return Conn(socket.create_connection((self.host, self.port), timeout=timeout * SLOW))


class Conn:
    """A client socket plus the bytes read past the last response."""

    def __init__(self, sock):
        self.sock = sock
        self._rest = b""

    def sendall(self, data):
        self.sock.sendall(data)

    def recv(self, n):
        return self.sock.recv(n)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def close(self):
        self.sock.close()

    def shutdown(self, how):
        self.sock.shutdown(how)

    def recv_response(self, timeout=10):
        return recv_response(self, timeout)


def recv_response(sock, timeout=10):
    """Read one HTTP/1.1 response (Content-Length or chunked) from sock.
    Returns (status, headers dict lower-case, body bytes); status None on EOF."""
    sock.settimeout(timeout * SLOW)
    buf = getattr(sock, "_rest", b"")
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            sock._rest = b""
            return None, {}, buf
        buf += d
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    if status == 100:
        sock._rest = buf
        return status, headers, b""
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            d = sock.recv(65536)
            if not d:
                break
            buf += d
        body, sock._rest = buf[:n], buf[n:]
        return status, headers, body
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                d = sock.recv(65536)
                if not d:
                    sock._rest = b""
                    return status, headers, body
                buf += d
            size_line, buf = buf.split(b"\r\n", 1)
            size = int(size_line, 16)
            while len(buf) < size + 2:
                d = sock.recv(65536)
                if not d:
                    sock._rest = b""
                    return status, headers, body + buf
                buf += d
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                sock._rest = buf
                return status, headers, body
    # no length: read to EOF
    while True:
        d = sock.recv(65536)
        if not d:
            break
        buf += d
    sock._rest = b""
    return status, headers, buf


def request(server, method, path, body=None, headers=None, timeout=30):
    """One request on a fresh connection; returns (status, headers, body)."""
    s = server.connect()
    try:
        data = body.encode() if isinstance(body, str) else (body or b"")
        h = {"Host": "x", "Connection": "close"}
        if body is not None:
            h["Content-Type"] = "application/json"
            h["Content-Length"] = str(len(data))
        h.update(headers or {})
        req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        s.sendall(req.encode() + b"\r\n" + data)
        return recv_response(s, timeout)
    finally:
        s.close()


def metrics(server):
    """GET /metrics parsed into {series: value}."""
    status, _, body = request(server, "GET", "/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, val = line.rpartition(" ")
        out[name] = float(val)
    return out


def wait_for(pred, timeout=10, interval=0.05):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


def sse_events(body):
    """Split an SSE body into the payloads of its data: lines (comments kept as ':...')."""
    out = []
    for block in body.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                out.append(line[6:])
            elif line.startswith(":"):
                out.append(line)
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Redis:
    """A real redis-server on a free port, no persistence; stop/start keep the port."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.proc = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def chat(server, body, headers=None, path="/v1/chat/completions"):
    """POST a generation request; returns (status, headers, parsed JSON or SSE events)."""
    import json
    status, h, raw = request(server, "POST", path, json.dumps(body), headers=headers)
    if h.get("content-type", "").startswith("text/event-stream"):
        return status, h, [e for e in sse_events(raw) if not e.startswith(":")]
    return status, h, json.loads(raw) if raw else None


def sse_text(events):
    """The concatenated delta text of chat SSE events."""
    import json
    out = ""
    for e in events:
        if e == "[DONE]":
            continue
        for ch in json.loads(e).get("choices", []):
            out += (ch.get("delta") or {}).get("content") or ch.get("text") or ""
    return out
