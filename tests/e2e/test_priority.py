"""Priority classes (issue 11, item 4): X-Priority interactive|batch (0 and
10) and the body's "priority" (vLLM: lower first). With every running place
taken by batch requests, an interactive one pre-empts one of them at the
next iteration instead of waiting behind the flood."""
import json
import threading
import time

from serverutil import SLOW, Server, metrics, request, wait_for

BATCH = {"model": "default", "max_tokens": 40, "ignore_eos": True, "temperature": 0}


def post(server, body, headers):
    h = {"Cache-Control": "no-store"}
    h.update(headers)
    t0 = time.time()
    st, _, raw = request(server, "POST", "/v1/chat/completions", body=json.dumps(body),
                         headers=h, timeout=300 * SLOW)
    return st, json.loads(raw), time.time() - t0, time.time()


def test_interactive_preempts_batch_flood(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--parallel", "2", "--no-admission"])
    try:
        done = {}

        def batch(i):
            body = dict(BATCH, messages=[{"role": "user", "content": f"Story number {i}."}])
            done[i] = post(s, body, {"X-Priority": "batch"})

        flood = [threading.Thread(target=batch, args=(i,)) for i in range(4)]
        for t in flood:
            t.start()
        # both places run batch work, two more wait
        assert wait_for(lambda: metrics(s)["barista_engine_active_sequences"] >= 2)
        assert wait_for(lambda: metrics(s)["barista_api_generations"] >= 4)
        pre0 = metrics(s)["barista_preemptions_total"]
        st, body, took, end = post(
            s, {"model": "default", "max_tokens": 3, "temperature": 0,
                "messages": [{"role": "user", "content": "Hi"}]}, {"X-Priority": "interactive"})
        assert st == 200, body
        for t in flood:
            t.join(300 * SLOW)
        assert all(done[i][0] == 200 for i in range(4))
        assert all(done[i][1]["usage"]["completion_tokens"] == 40 for i in range(4))
        # served ahead of every batch request, even those already running
        assert all(end < done[i][3] for i in range(4)), (end, [done[i][3] for i in range(4)])
        assert metrics(s)["barista_preemptions_total"] >= pre0 + 1
    finally:
        assert s.stop() == 0


def test_body_priority_orders_the_queue(barista_bin, gguf_path):
    # one place, a running request; then a low-priority (20) and a
    # high-priority (-5) one queue: the high one runs first
    s = Server(barista_bin, gguf_path, args=["--parallel", "1", "--no-admission"])
    try:
        res = {}

        def one(name, prio, n):
            body = dict(BATCH, max_tokens=n, priority=prio,
                        messages=[{"role": "user", "content": f"Tell me about {name}."}])
            res[name] = post(s, body, {})

        first = threading.Thread(target=one, args=("first", 0, 30))
        first.start()
        assert wait_for(lambda: metrics(s)["barista_engine_active_sequences"] == 1)
        low = threading.Thread(target=one, args=("low", 20, 3))
        low.start()
        assert wait_for(lambda: metrics(s)["barista_api_generations"] >= 2)
        high = threading.Thread(target=one, args=("high", -5, 3))
        high.start()
        for t in (first, low, high):
            t.join(300 * SLOW)
        assert res["high"][3] < res["low"][3]
    finally:
        assert s.stop() == 0
