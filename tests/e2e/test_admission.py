"""Admission control (issue 11, item 3): a bounded queue per model
(--max-queue) and refusal of requests whose first token cannot come within
their budget given the measured costs — 503 with code "overloaded" and a
Retry-After, fast, never for a cache hit."""
import json
import threading
import time

import pytest

from serverutil import SLOW, Server, metrics, request, wait_for

LONG = {"model": "default", "max_tokens": 300, "ignore_eos": True, "temperature": 0,
        "messages": [{"role": "user", "content": "Write a very long story."}]}


def post(server, body, headers=None, timeout=300):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return request(server, "POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                   headers=h, timeout=timeout)


@pytest.fixture()
def busy(barista_bin, gguf_path):
    """parallel 1 and a running blocker; yields (server, blocker thread)."""
    s = Server(barista_bin, gguf_path, args=["--parallel", "1", "--max-queue", "1"])
    res = {}

    def blocker():
        res["b"] = post(s, LONG, {"Cache-Control": "no-store"})

    t = threading.Thread(target=blocker)
    t.start()
    assert wait_for(lambda: metrics(s)["barista_engine_active_sequences"] == 1)
    yield s, t, res
    t.join(300)
    assert s.stop() == 0


def test_bounded_queue_refuses_at_once(busy):
    s, t, res = busy
    # a cached answer first (it was computed before the queue filled up)
    q = dict(LONG, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    waiting = {}

    def one():
        waiting["r"] = post(s, dict(LONG, max_tokens=3), {"Cache-Control": "no-store"})

    w = threading.Thread(target=one)
    w.start()
    assert wait_for(lambda: metrics(s)["barista_api_generations"] >= 2)
    t0 = time.time()
    # (not the waiting request's twin, which would simply join it)
    st, h, raw = post(s, dict(LONG, max_tokens=4), {"Cache-Control": "no-store"})
    took = time.time() - t0
    assert st == 503, raw
    err = json.loads(raw)["error"]
    assert err["code"] == "overloaded" and "queue" in err["message"]
    assert int(h["retry-after"]) >= 1
    assert took < 0.5 * SLOW, took
    assert metrics(s)['barista_rejected_requests_total{reason="queue"}'] >= 1
    w.join(300)
    assert waiting["r"][0] == 200  # the queued one is served
    t.join(300)
    # a cache hit is never refused, even with the queue full again
    assert post(s, q)[0] == 200  # computed now (the engine is free)
    b2 = threading.Thread(target=lambda: post(s, dict(LONG, max_tokens=200),
                                              {"Cache-Control": "no-store"}))
    b2.start()
    assert wait_for(lambda: metrics(s)["barista_engine_active_sequences"] == 1)
    w2 = threading.Thread(target=one)
    w2.start()
    assert wait_for(lambda: metrics(s)["barista_api_generations"] >= 2)
    assert post(s, dict(LONG, max_tokens=5), {"Cache-Control": "no-store"})[0] == 503
    st, h, _ = post(s, q)
    assert st == 200 and h["x-cache"] == "HIT"
    w2.join(300)
    b2.join(300)


def test_budget_that_cannot_be_met_is_refused_fast(busy):
    s, t, res = busy
    time.sleep(0.5 * SLOW)  # the blocker's tokens give the model its costs
    t0 = time.time()
    st, h, raw = post(s, dict(LONG, max_tokens=3), {"X-Timeout-Ms": "50",
                                                     "Cache-Control": "no-store"})
    took = time.time() - t0
    assert st == 503, raw
    err = json.loads(raw)["error"]
    assert err["code"] == "overloaded" and "budget" in err["message"]
    assert int(h["retry-after"]) >= 1
    assert took < 0.5 * SLOW, took
    assert metrics(s)['barista_rejected_requests_total{reason="budget"}'] >= 1
    # a budget that can be met is admitted (it waits its turn)
    t.join(300)
    assert res["b"][0] == 200
    st, _, _ = post(s, dict(LONG, max_tokens=3), {"X-Timeout-Ms": "600000"})
    assert st == 200
