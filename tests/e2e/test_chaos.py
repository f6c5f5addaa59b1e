"""Faults under load, short form (issue 16): bounded loops on loopback that
run in the README's test command. Redis frozen and restarted under 16
clients, Redis slowed by a delaying proxy, hostile clients (never reading, one byte a second, 5,000 idle
connections, a 10,000-request pipeline) next to a normal one, file
descriptors running out, SIGTERM under load. Long runs belong in bench/soak."""
import json
import os
import resource
import signal
import socket
import threading
import time

import pytest

from serverutil import SLOW, Redis, Server, chat, metrics, request, wait_for

ADMIN = {"Authorization": "Bearer adm"}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def q(i, **kw):
    b = {"model": "default", "temperature": 0, "max_tokens": 4,
         "messages": [{"role": "user", "content": f"Say a word about {i % 7}."}]}
    b.update(kw)
    return b


def test_redis_frozen_and_restarted_under_16_clients(barista_bin, gguf_path):
    """16 clients send hits and misses while Redis is frozen (SIGSTOP), let
    go, killed and restarted: no client request fails, and L2 serves again
    afterwards."""
    r = Redis()
    s = Server(barista_bin, gguf_path, args=["--redis", r.url, "--redis-timeout-ms", "50",
                                             "--redis-stall-ms", "300", "--admin-key", "adm"])
    failures, done = [], [0]
    stop = threading.Event()

    def client(k):
        i = 0
        while not stop.is_set():
            try:
                st, _, _ = chat(s, q(k * 3 + i % 5, stream=(i % 2 == 0)))
                if st != 200:
                    failures.append(st)
            except Exception as e:  # noqa: BLE001 - any failure counts
                failures.append(repr(e))
            done[0] += 1
            i += 1

    try:
        assert wait_for(lambda: json.loads(request(s, "GET", "/v1/cache/stats",
                                                   headers=ADMIN)[2])["l2"]["connected"], 10)
        ts = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(16)]
        for t in ts:
            t.start()
        time.sleep(1 * SLOW)
        r.proc.send_signal(signal.SIGSTOP)
        time.sleep(1.5 * SLOW)
        r.proc.send_signal(signal.SIGCONT)
        time.sleep(1 * SLOW)
        r.stop()
        time.sleep(1 * SLOW)
        r.start()
        time.sleep(1.5 * SLOW)
        stop.set()
        for t in ts:
            t.join(60 * SLOW)
        assert not failures, failures[:5]
        assert done[0] >= 32
        st = json.loads(request(s, "GET", "/v1/cache/stats", headers=ADMIN)[2])["l2"]
        assert st["trips"] + st["conn_failures"] >= 1
        assert wait_for(lambda: json.loads(request(s, "GET", "/v1/cache/stats",
                                                   headers=ADMIN)[2])["l2"]["connected"], 15)
    finally:
        stop.set()
        r.proc.send_signal(signal.SIGCONT)
        assert s.stop() == 0
        r.stop()


class SlowProxy:
    """A TCP proxy on loopback that holds every chunk `delay` seconds before
    passing it on (a slow network or a swapping Redis)."""

    def __init__(self, target_port, delay):
        self.delay = delay
        self.target = target_port
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _pipe(self, a, b):
        try:
            while not self.stop:
                d = a.recv(65536)
                if not d:
                    break
                time.sleep(self.delay)
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c), daemon=True).start()

    def close(self):
        self.stop = True
        self.ls.close()


def test_slow_redis_adds_bounded_latency(barista_bin, gguf_path):
    """Redis behind a proxy that delays every packet 30 ms, L2 timeout 20 ms:
    lookups time out (misses), nothing fails, and a cache hit from L1 stays
    fast; the L2 timeout bounds what a slow Redis adds to a request."""
    r = Redis()
    px = SlowProxy(r.port, 0.03)
    s = Server(barista_bin, gguf_path, args=["--redis", f"redis://127.0.0.1:{px.port}",
                                             "--redis-timeout-ms", "20", "--admin-key", "adm"])
    try:
        assert wait_for(lambda: json.loads(request(s, "GET", "/v1/cache/stats",
                                                   headers=ADMIN)[2])["l2"]["connected"], 15)
        fails = []

        def client(k):
            for i in range(3):
                st, _, _ = chat(s, q(k * 10 + i))
                if st != 200:
                    fails.append(st)

        ts = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120 * SLOW)
        assert not fails
        st = json.loads(request(s, "GET", "/v1/cache/stats", headers=ADMIN)[2])["l2"]
        assert st["timeouts"] >= 1  # Redis answered slower than the bound: misses
        t0 = time.time()
        st_, h, _ = chat(s, q(0))
        assert h["x-cache"] == "HIT" and h["x-cache-tier"] == "L1"
        assert time.time() - t0 < 2 * SLOW
    finally:
        px.close()
        assert s.stop() == 0
        r.stop()


def test_hostile_clients_next_to_a_normal_one(barista_bin, gguf_path):
    """Clients that never read, that send a byte a second, that hold 5,000
    idle connections and that pipeline 10,000 requests: the server's RSS
    stays bounded and a normal client keeps being answered."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 16384)
    if want < 5600:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    s = Server(barista_bin, gguf_path, args=["--max-connections", "6000",
                                             "--idle-timeout-ms", str(int(60000 * SLOW)),
                                             "--header-timeout-ms", str(int(60000 * SLOW))])
    held = []
    try:
        base = rss_kib(s.proc.pid)
        # 5,000 idle connections
        for _ in range(5000):
            held.append(socket.create_connection((s.host, s.port), timeout=10))
        # a slow-loris: one byte of a request line
        slow = socket.create_connection((s.host, s.port))
        slow.sendall(b"G")
        # a stream whose reader never reads
        nr = socket.create_connection((s.host, s.port))
        nr.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        b = json.dumps(q(1, max_tokens=200, stream=True, ignore_eos=True)).encode()
        nr.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                   % (len(b), b))
        # a 10,000-request pipeline, never read
        pl = socket.create_connection((s.host, s.port))
        pl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        pl.setblocking(False)
        try:
            pl.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 10000)
        except BlockingIOError:
            pass
        # the normal client
        for i in range(5):
            slow.sendall(b"ET /h"[i:i + 1])  # the slow-loris goes on, a byte at a time
            st, _, _ = chat(s, q(i))
            assert st == 200
            time.sleep(0.2)
        assert s.proc.poll() is None
        grown = rss_kib(s.proc.pid) - base
        assert grown < 200 * 1024, f"RSS grew {grown} KiB"
        for c in (slow, nr, pl):
            c.close()
    finally:
        for c in held:
            c.close()
        assert s.stop() == 0


def test_fd_exhaustion_keeps_serving_and_recovers(barista_bin, gguf_path):
    """With a low file-descriptor limit the server refuses nothing it already
    holds: open connections keep being served while new ones cannot be
    accepted, and once fds free up it accepts again."""
    def low_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))

    import subprocess
    env = {k: v for k, v in os.environ.items()}
    proc = subprocess.Popen([barista_bin, "serve", "--port", "0", "-m", gguf_path, "--threads",
                             "2", "--idle-timeout-ms", str(int(60000 * SLOW))],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, text=True, preexec_fn=low_fds)
    lines = []
    port = None
    deadline = time.time() + 60 * SLOW
    while time.time() < deadline and port is None:
        line = proc.stdout.readline()
        lines.append(line)
        if "ready on http://" in line:
            port = int(line.rsplit(":", 1)[1].split()[0])
    threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True).start()
    assert port, "".join(lines)
    conns = []
    try:
        keep = socket.create_connection(("127.0.0.1", port))

        def get(sock):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                d = sock.recv(4096)
                if not d:
                    return None
                data += d
            return data[:12]

        assert get(keep) == b"HTTP/1.1 200"
        for _ in range(150):  # more than the server has fds
            try:
                conns.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        time.sleep(0.5)
        assert proc.poll() is None
        assert get(keep) == b"HTTP/1.1 200"  # the held connection still works
        for c in conns:
            c.close()
        conns = []
        time.sleep(1.0 * SLOW)

        def fresh_ok():
            try:
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                c.settimeout(5 * SLOW)
                ok = get(c) == b"HTTP/1.1 200"
                c.close()
                return ok
            except OSError:
                return False

        assert wait_for(fresh_ok, timeout=15)
        keep.close()
    finally:
        for c in conns:
            c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30 * SLOW) == 0, "".join(lines)[-2000:]


def test_sigterm_under_load(barista_bin, gguf_path, tmp_path):
    """SIGTERM while 8 clients stream: the in-flight replies finish within the
    grace (each ends with [DONE]), the cache snapshot written at exit is
    valid (a restart loads it), and the exit code is 0."""
    snap = tmp_path / "cache.snap"
    args = ["--cache-file", str(snap), "--shutdown-grace-ms", str(int(30000 * SLOW))]
    s = Server(barista_bin, gguf_path, args=args)
    results = []

    def one(i):
        c = socket.create_connection((s.host, s.port))
        b = json.dumps(q(i, max_tokens=24, stream=True)).encode()
        c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(b), b))
        data = b""
        c.settimeout(120 * SLOW)
        while True:
            d = c.recv(65536)
            if not d:
                break
            data += d
        c.close()
        results.append(data)

    for i in range(6):  # something to snapshot
        chat(s, q(100 + i))
    ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    time.sleep(0.3 * SLOW)
    s.signal(signal.SIGTERM)
    for t in ts:
        t.join(180 * SLOW)
    assert s.wait(60) == 0
    assert len(results) == 8
    for data in results:
        assert data.startswith(b"HTTP/1.1 200") or data == b"", data[:100]
        if data:
            assert b"data: [DONE]" in data
    s2 = Server(barista_bin, gguf_path, args=args)
    try:
        import re
        m = re.search(r"cache snapshot .*: (\d+) entries loaded", s2.log)
        assert m and int(m.group(1)) >= 6, s2.log
        assert "warning: cache snapshot" not in s2.log
    finally:
        assert s2.stop() == 0
