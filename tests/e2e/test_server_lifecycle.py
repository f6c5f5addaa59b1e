"""`barista serve` over time: concurrent clients, cancellation on disconnect,
SSE pings, back-pressure from a slow reader, graceful shutdown, and the
settings table (flags, env, config file, --help)."""
import json
import signal
import socket
import subprocess
import threading
import time

import pytest

from serverutil import (SLOW, Conn, Server, metrics, recv_response, request, sse_events,
                        wait_for)

LONG = {"prompt": "Write a very long story about a dragon.", "max_tokens": 4000,
        "ignore_eos": True}


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--ctx", "1024", "--parallel", "4"])
    yield s
    assert s.stop() == 0


def post_raw(server, path, obj):
    c = server.connect()
    body = json.dumps(obj).encode()
    c.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
    return c


def test_concurrent_clients(server):
    """More clients than engine slots: every one gets its answer."""
    results = [None] * 6

    def one(i):
        results[i] = request(server, "POST", "/v1/chat/completions", json.dumps(
            {"messages": [{"role": "user", "content": f"Count to {i}"}], "max_tokens": 4,
             "stream": i % 2 == 1}), timeout=120)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i, (status, h, body) in enumerate(results):
        assert status == 200
        if i % 2:
            ev = sse_events(body)
            assert ev[-1] == "[DONE]"
        else:
            assert json.loads(body)["usage"]["completion_tokens"] >= 1
    assert wait_for(lambda: metrics(server)["barista_api_generations"] == 0)


def test_disconnect_mid_stream_cancels(server):
    before = metrics(server).get('barista_cancelled_requests_total{reason="disconnect"}', 0)
    c = post_raw(server, "/v1/completions", dict(LONG, stream=True))
    c.settimeout(30 * SLOW)
    got = b""
    while got.count(b"data: ") < 3:
        d = c.recv(4096)
        assert d
        got += d
    assert metrics(server)["barista_engine_active_sequences"] == 1
    c.close()
    assert wait_for(lambda: metrics(server)["barista_engine_active_sequences"] == 0, timeout=5)
    m = metrics(server)
    assert m["barista_api_generations"] == 0
    assert m['barista_cancelled_requests_total{reason="disconnect"}'] == before + 1


def test_disconnect_non_streaming_cancels(server):
    c = post_raw(server, "/v1/completions", LONG)
    assert wait_for(lambda: metrics(server)["barista_engine_active_sequences"] == 1)
    time.sleep(0.2)
    c.close()
    assert wait_for(lambda: metrics(server)["barista_engine_active_sequences"] == 0, timeout=5)
    assert metrics(server)["barista_api_generations"] == 0


def test_disconnect_while_reading_paused_cancels(server):
    """A client that pipelines more than the input buffer behind a
    non-streaming request (so the server stops reading its socket) and then
    disconnects is still noticed: its generation is cancelled, not run to
    max_tokens for nobody."""
    before = metrics(server).get('barista_cancelled_requests_total{reason="disconnect"}', 0)
    c = post_raw(server, "/v1/completions", LONG)
    junk = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 4000  # > 64 KiB, never read
    c.sock.setblocking(False)
    try:
        c.sendall(junk)
    except BlockingIOError:
        pass
    c.sock.setblocking(True)
    assert wait_for(lambda: metrics(server)["barista_engine_active_sequences"] == 1)
    c.close()
    assert wait_for(lambda: metrics(server)["barista_engine_active_sequences"] == 0, timeout=10)
    after = metrics(server).get('barista_cancelled_requests_total{reason="disconnect"}', 0)
    assert after == before + 1


def test_sse_ping_while_waiting(barista_bin, gguf_path):
    """While a stream has nothing to say (queued behind another generation, or
    in a long prefill) it gets `: ping` comments; then its tokens follow."""
    s = Server(barista_bin, gguf_path, args=["--parallel", "1", "--sse-ping-ms", "50"])
    try:
        blocker = post_raw(s, "/v1/completions", dict(LONG, stream=True))
        assert wait_for(lambda: metrics(s)["barista_engine_active_sequences"] == 1)
        c = post_raw(s, "/v1/completions", {"prompt": "Hi", "max_tokens": 2, "stream": True})
        c.settimeout(30 * SLOW)
        buf = b""
        while buf.count(b": ping") < 2:
            d = c.recv(4096)
            assert d
            buf += d
        assert b"data: " not in buf
        blocker.close()  # frees the slot
        while b"[DONE]" not in buf:
            d = c.recv(4096)
            assert d
            buf += d
        c.close()
        assert b'"text":' in buf
    finally:
        assert s.stop() == 0


def test_streaming_is_incremental(server):
    """The first token's chunk arrives while the generation is still running."""
    c = post_raw(server, "/v1/completions", dict(LONG, max_tokens=400, stream=True))
    c.settimeout(60 * SLOW)
    buf = b""
    while buf.count(b'"text":"') < 1:
        d = c.recv(65536)
        assert d
        buf += d
    m = metrics(server)
    assert m["barista_engine_active_sequences"] == 1
    assert b"[DONE]" not in buf
    c.close()
    assert wait_for(lambda: metrics(server)["barista_engine_active_sequences"] == 0)


def test_slow_reader_backpressure(barista_bin, gguf_path):
    """A reader that does not read: once the socket is full the server stops
    writing one chunk per token and coalesces the pending text (and logprobs);
    the reader still gets every token."""
    s = Server(barista_bin, gguf_path, args=["--write-queue-bytes", "1024", "--sse-ping-ms", "0",
                                             "--send-buffer-bytes", "4096"])
    try:
        req = {"prompt": "Once upon a time", "max_tokens": 64, "ignore_eos": True,
               "logprobs": 5, "stream": True, "stream_options": {"include_usage": True}}
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.connect((s.host, s.port))
        body = json.dumps(req).encode()
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        # do not read until the generation is over
        assert wait_for(lambda: metrics(s)["barista_api_generations"] == 0, timeout=300)
        status, _, out = recv_response(Conn(sock), 60)
        sock.close()
        assert status == 200
        chunks = [json.loads(e) for e in sse_events(out) if e.startswith("{")]
        assert chunks[-1]["usage"]["completion_tokens"] == 64
        content = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["text"]]
        n_tokens = sum(len(c["logprobs"]["tokens"]) for c in content)
        assert n_tokens == 64
        assert len(content) < 48, len(content)  # coalesced while the socket was full
    finally:
        assert s.stop() == 0


def test_slow_reader_bound_counts_logprobs(barista_bin, gguf_path):
    """--stream-buffer-bytes bounds everything pending for a reader that does
    not read, logprobs included: 64 tokens of text are a few hundred bytes,
    but with top_logprobs 20 they are tens of KiB, so the reader is cut as too
    slow instead of buffering without a bound."""
    s = Server(barista_bin, gguf_path, args=["--write-queue-bytes", "1024", "--sse-ping-ms", "0",
                                             "--send-buffer-bytes", "4096",
                                             "--stream-buffer-bytes", "8192"])
    try:
        req = {"model": "default", "messages": [{"role": "user", "content": "Tell a story."}],
               "max_tokens": 64, "ignore_eos": True, "logprobs": True, "top_logprobs": 20,
               "stream": True}
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.connect((s.host, s.port))
        body = json.dumps(req).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert wait_for(lambda: metrics(s)["barista_api_generations"] == 0, timeout=300)
        m = metrics(s)
        assert m.get('barista_cancelled_requests_total{reason="slow_reader"}', 0) >= 1
        sock.close()
    finally:
        assert s.stop() == 0


def test_sigterm_while_tokenizing_off_loop(barista_bin, gguf_path):
    """Review finding (issue 16, defect 6): SIGTERM while cacheable requests
    of >= 8 KiB are being tokenized on the thread pool with their connections
    already closed used to read the freed cache (single-flight) when the
    tokenization finished. The server must exit 0 (under ASan: no report)."""
    s = Server(barista_bin, gguf_path, args=["--shutdown-grace-ms", "2000"])
    text = "word " * 3000  # ~15 KiB: tokenized off the loop
    conns = []
    for i in range(6):
        c = post_raw(s, "/v1/chat/completions",
                     {"model": "default", "temperature": 0, "max_tokens": 4,
                      "messages": [{"role": "user", "content": text + str(i)}]})
        conns.append(c)
    for c in conns:
        c.close()
    s.signal(signal.SIGTERM)
    assert s.wait(30) == 0
    assert "ERROR: AddressSanitizer" not in s.log and "runtime error" not in s.log


def test_graceful_shutdown_finishes_inflight(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--shutdown-grace-ms", str(int(60000 * SLOW))])
    c = post_raw(s, "/v1/completions",
                 {"prompt": "Hello", "max_tokens": 12, "ignore_eos": True, "stream": True})
    c.settimeout(30 * SLOW)
    first = c.recv(4096)
    assert b"data: " in first or first.startswith(b"HTTP/1.1 200")
    idle = s.connect()  # an idle keep-alive connection is closed at once
    s.signal(signal.SIGTERM)
    rest = first
    while True:
        d = c.recv(65536)
        if not d:
            break
        rest += d
    c.close()
    assert b"data: [DONE]" in rest
    assert rest.endswith(b"0\r\n\r\n")  # chunked end, then the server closed
    assert idle.recv(10) == b""
    assert s.wait(30) == 0
    assert "SIGTERM" in s.log
    with pytest.raises(OSError):
        socket.create_connection((s.host, s.port), timeout=2)


def test_shutdown_grace_expires(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--shutdown-grace-ms", "300"])
    c = post_raw(s, "/v1/completions", dict(LONG, stream=True))
    c.settimeout(30 * SLOW)
    assert wait_for(lambda: metrics(s)["barista_engine_active_sequences"] == 1)
    t0 = time.time()
    s.signal(signal.SIGINT)
    buf = b""
    while True:
        d = c.recv(65536)
        if not d:
            break
        buf += d
    c.close()
    assert s.wait(30) == 0
    assert time.time() - t0 < 10 * SLOW
    events = sse_events(buf.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n"))
    assert "[DONE]" in " ".join(events)
    assert "cancelling 1 generation" in s.log


def test_settings_precedence(barista_bin, gguf_path, tmp_path):
    conf = tmp_path / "barista.conf"
    conf.write_text("# test\nmax-connections = 77\nsse_ping_ms = 1234\nidle-timeout-ms = 5555\n")
    s = Server(barista_bin, gguf_path, args=["--config", str(conf), "--idle-timeout-ms", "6666"],
               env={"BARISTA_SSE_PING_MS": "4321", "BARISTA_MAX_TOKENS_DEFAULT": "7"})
    try:
        _, _, body = request(s, "GET", "/v1/config")
        cfg = json.loads(body)["settings"]
        assert cfg["max-connections"] == {**cfg["max-connections"], "value": 77, "source": "file"}
        assert cfg["sse-ping-ms"]["value"] == 4321 and cfg["sse-ping-ms"]["source"] == "env"
        assert cfg["idle-timeout-ms"]["value"] == 6666
        assert cfg["idle-timeout-ms"]["source"] == "flag"
        assert cfg["max-tokens-default"]["value"] == 7
        assert cfg["host"]["value"] == "127.0.0.1" and cfg["host"]["source"] == "default"
        # max-tokens-default applies when a request gives none
        _, _, body = request(s, "POST", "/v1/completions",
                             json.dumps({"prompt": "Hi", "ignore_eos": True}), timeout=60)
        assert json.loads(body)["usage"]["completion_tokens"] == 7
    finally:
        assert s.stop() == 0


def test_help_and_bad_flags(barista_bin):
    out = subprocess.run([barista_bin, "serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--host", "--port", "--model", "--config", "--threads", "--max-body-bytes",
                 "--max-header-bytes", "--max-connections", "--header-timeout-ms",
                 "--shutdown-grace-ms", "--sse-ping-ms", "BARISTA_PORT"):
        assert flag in out.stdout
    bad = subprocess.run([barista_bin, "serve", "--port", "99999"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "port" in bad.stderr
    bad = subprocess.run([barista_bin, "serve", "--what"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--what" in bad.stderr


def test_bad_model_exits_1(barista_bin, tmp_path):
    p = tmp_path / "nope.gguf"
    p.write_bytes(b"not a gguf")
    out = subprocess.run([barista_bin, "serve", "--port", "0", "-m", str(p)],
                         capture_output=True, text=True, timeout=60 * SLOW)
    assert out.returncode == 1
    assert "cannot load model" in out.stderr
