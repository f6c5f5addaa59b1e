"""`barista serve` at the HTTP level with raw sockets: malformed requests,
limits (413, 431, connections), timeouts (408, idle), chunked bodies,
Expect: 100-continue, keep-alive and pipelining, slow-loris."""
import json
import socket
import threading
import time

import pytest

from serverutil import SLOW, Server, metrics, recv_response, request, wait_for


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=[
        "--max-body-bytes", "4096", "--max-header-bytes", "2048", "--max-connections", "40",
        "--header-timeout-ms", str(int(1000 * SLOW)), "--body-timeout-ms", str(int(1000 * SLOW)),
        "--idle-timeout-ms", str(int(1500 * SLOW))])
    yield s
    assert s.stop() == 0


def raw(server, data, timeout=10):
    c = server.connect()
    c.sendall(data)
    r = c.recv_response(timeout)
    c.close()
    return r


def err_of(body):
    e = json.loads(body)["error"]
    assert set(e) >= {"message", "type", "param", "code"}
    return e


def test_garbage_request_line(server):
    status, h, body = raw(server, b"\x16\x03\x01 hello there\r\n\r\n")
    assert status == 400
    assert h["connection"] == "close"
    err_of(body)


def test_bad_method_token(server):
    status, _, _ = raw(server, b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400


def test_bad_version(server):
    status, _, _ = raw(server, b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n")
    assert status in (400, 505)


def test_huge_headers_431(server):
    status, _, body = raw(server, b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n")
    assert status == 431
    assert err_of(body)["code"] == "headers_too_large"


def test_body_too_large_413(server):
    big = json.dumps({"prompt": "x" * 5000})
    status, _, body = request(server, "POST", "/v1/completions", big)
    assert status == 413
    assert err_of(body)["code"] == "request_too_large"


def test_chunked_body_too_large_413(server):
    c = server.connect()
    c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        c.sendall(b"800\r\n" + b"a" * 0x800 + b"\r\n")
    status, _, _ = c.recv_response()
    assert status == 413
    c.close()


def test_bad_chunk_size(server):
    status, _, _ = raw(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n")
    assert status == 400


def test_chunked_body_ok(server):
    body = json.dumps({"prompt": "Hi", "max_tokens": 2}).encode()
    a, b = body[:7], body[7:]
    c = server.connect()
    c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
              b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(a), a, len(b), b))
    status, _, resp = c.recv_response(60)
    c.close()
    assert status == 200
    assert json.loads(resp)["object"] == "text_completion"


def test_truncated_body(server):
    c = server.connect()
    c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro")
    c.shutdown(socket.SHUT_WR)
    status, _, _ = c.recv_response()
    assert status == 400
    c.close()


def test_truncated_body_timeout_408(server):
    c = server.connect()
    c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro")
    status, _, body = c.recv_response(10)
    assert status == 408
    assert err_of(body)["code"] == "request_timeout"
    assert c.recv(100) == b""  # closed
    c.close()


def test_header_timeout_408(server):
    c = server.connect()
    c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    t0 = time.time()
    status, h, _ = c.recv_response(10)
    assert status == 408 and h["connection"] == "close"
    assert time.time() - t0 < 5 * SLOW
    c.close()


def test_idle_keepalive_closed(server):
    c = server.connect()
    c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, h, _ = c.recv_response()
    assert status == 200 and h["connection"] == "keep-alive"
    c.settimeout(10 * SLOW)
    t0 = time.time()
    assert c.recv(100) == b""  # the server closes the idle connection
    assert time.time() - t0 >= 1.0 * SLOW * 0.9


def test_keepalive_and_pipelining_in_order(server):
    c = server.connect()
    gen = json.dumps({"prompt": "Hello", "max_tokens": 3}).encode()
    reqs = (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" +
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
                len(gen), gen) +
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n" +
            b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" +
            b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    c.sendall(reqs)
    got = [c.recv_response(60) for _ in range(5)]
    c.close()
    assert [g[0] for g in got] == [200, 200, 200, 404, 200]
    assert json.loads(got[0][2]) == {"status": "ok"}
    assert json.loads(got[1][2])["object"] == "text_completion"
    assert json.loads(got[2][2])["object"] == "list"
    assert json.loads(got[4][2])["status"] == "ready"
    assert got[4][1]["connection"] == "close"


def test_pipelined_byte_by_byte(server):
    c = server.connect()
    data = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 3
    for i in range(len(data)):
        c.sendall(data[i:i + 1])
    assert [c.recv_response()[0] for _ in range(3)] == [200, 200, 200]
    c.close()


def test_expect_100_continue(server):
    body = json.dumps({"prompt": "Hi", "max_tokens": 2}).encode()
    c = server.connect()
    c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
              b"Expect: 100-continue\r\n\r\n" % len(body))
    status, _, _ = c.recv_response()
    assert status == 100
    c.sendall(body)
    status, _, resp = c.recv_response(60)
    assert status == 200
    c.close()


def test_expect_100_too_large(server):
    c = server.connect()
    c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n"
              b"Expect: 100-continue\r\n\r\n")
    status, _, _ = c.recv_response()
    assert status == 413
    c.close()


def test_http10(server):
    c = server.connect()
    c.sendall(b"GET /health HTTP/1.0\r\n\r\n")
    status, h, body = c.recv_response()
    assert status == 200 and h["connection"] == "close"
    c.close()


def test_max_connections_and_slowloris(server):
    """Hold many half-sent requests; others are still answered, the over-limit
    connection gets a clean 503, and the slow ones time out with 408."""
    held = []
    for _ in range(30):
        c = server.connect()
        c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        held.append(c)
    # trickle a byte on each so they are not idle
    for c in held:
        c.sendall(b"a")
    t0 = time.time()
    status, _, _ = request(server, "GET", "/health")
    assert status == 200
    assert time.time() - t0 < 2 * SLOW
    # fill up to the limit (40): 30 held + 10 more
    more = [server.connect() for _ in range(10)]
    time.sleep(0.2)
    over = server.connect()
    over.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, h, body = over.recv_response()
    assert status == 503
    assert err_of(body)["code"] == "too_many_connections"
    over.close()
    for c in more:
        c.close()
    # the slow-loris connections are cut by the header timeout
    for c in held:
        status, _, _ = c.recv_response(10)
        assert status == 408
        c.close()
    assert wait_for(lambda: metrics(server)["barista_http_connections"] <= 1)
    assert request(server, "GET", "/health")[0] == 200


def test_health_while_generating(server):
    """The loop never blocks on the engine."""
    done = threading.Event()

    def long_gen():
        request(server, "POST", "/v1/completions",
                json.dumps({"prompt": "Tell me a story", "max_tokens": 48, "ignore_eos": True}),
                timeout=120)
        done.set()

    t = threading.Thread(target=long_gen)
    t.start()
    assert wait_for(lambda: metrics(server)["barista_engine_active_sequences"] >= 1)
    lat = []
    for _ in range(5):
        t0 = time.time()
        assert request(server, "GET", "/health")[0] == 200
        lat.append(time.time() - t0)
    assert not done.is_set() or max(lat) < 0.5 * SLOW
    assert max(lat) < 0.5 * SLOW
    t.join()


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_pipelined_flood_without_reading_stays_bounded(server):
    """A client pipelines thousands of cheap requests and never reads: the
    server stops dispatching once the connection's unsent output passes the
    write-queue bound (instead of queueing every reply in memory), counts it,
    and serves the rest in order once the client reads."""
    before = _rss_kib(server.proc.pid)
    paused0 = metrics(server).get("barista_http_output_paused_total", 0)
    n = 6000
    c = server.connect()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    sent = 0

    def writer():
        nonlocal sent
        try:
            for _ in range(n // 100):
                c.sendall(req * 100)
                sent += 100
        except OSError:
            pass

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    t.join(timeout=5 * SLOW)  # the server stops reading: the writer blocks
    time.sleep(0.5 * SLOW)
    grown = _rss_kib(server.proc.pid) - before
    # each /metrics reply is several KiB: 6000 of them queued would be tens of MiB
    assert grown < 16 * 1024, f"RSS grew {grown} KiB with {sent} pipelined requests unread"
    assert metrics(server).get("barista_http_output_paused_total", 0) > paused0
    # now read everything: every reply arrives, in order, complete
    c.settimeout(30 * SLOW)
    got = 0
    while got < 50:
        status, _, _ = recv_response(c, timeout=30 * SLOW)
        assert status == 200
        got += 1
    c.close()
