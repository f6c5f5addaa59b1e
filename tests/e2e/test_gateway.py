"""The gateway (issue 12): barista in front of OpenAI-compatible upstreams.

Real upstreams are two barista replicas on loopback serving the default model
(max_tokens tiny); upstream_stub.py only stands in for faults a real server
cannot be made to produce (500, malformed chunk, a cut stream, a reset, a
hang). Clients use max_retries=0 so what is tested is the gateway's own
retrying. Mechanism checks only; timings are in bench/gateway."""
import json
import os
import re
import signal
import threading
import time

import openai
import pytest

from serverutil import SLOW, Server, free_port, metrics, request, wait_for
from upstream_stub import Stub

KEY = "sk-gw-test-5f0d1e"  # the replicas' --api-key; the gateway reads it from the env
UP_TIMEOUT = 10  # seconds per attempt on the real replicas (2 s timed out on a loaded 2-core machine)
LOAD = 2  # concurrent clients in the kill phase


def replica(barista_bin, gguf_path, port):
    return Server(barista_bin, gguf_path, ["--parallel", "4", "--embedding-model", "none",
                                           "--api-key", KEY], threads=1, port=port)


@pytest.fixture(scope="module")
def cluster(barista_bin, gguf_path, tmp_path_factory):
    ports = [free_port(), free_port()]
    reps = [replica(barista_bin, gguf_path, p) for p in ports]
    stub = Stub()
    d = tmp_path_factory.mktemp("gw")
    timeout = UP_TIMEOUT
    cfg = "model_list:\n"
    for p in ports:
        cfg += (f"  - model_name: smol\n    litellm_params:\n"
                f"      model: openai/SmolLM2-135M-Instruct.Q4_1\n"
                f"      api_base: http://127.0.0.1:{p}/v1\n"
                f"      api_key: os.environ/GW_TEST_KEY\n"
                f"      timeout: {timeout}\n")
    for mode in ("500", "badjson", "cut", "reset", "hang", "ok"):
        cfg += (f"  - model_name: stub-{mode}\n    litellm_params:\n"
                f"      model: openai/stub\n      api_base: {stub.base(mode)}\n"
                f"      api_key: os.environ/GW_TEST_KEY\n      timeout: 1.5\n")
    # a group whose first replica always fails: every request still succeeds
    cfg += (f"  - model_name: mixed\n    litellm_params: {{model: openai/stub, "
            f"api_base: '{stub.base('500')}'}}\n"
            f"  - model_name: mixed\n    litellm_params: {{model: openai/stub, "
            f"api_base: '{stub.base('ok')}'}}\n")
    cfg += ("router_settings:\n  routing_strategy: latency-based-routing\n"
            "  num_retries: 2\n  allowed_fails: 1\n  cooldown_time: 1\n")
    (d / "models.yaml").write_text(cfg)
    gw = Server(barista_bin, None, ["--models", str(d / "models.yaml"),
                                    "--embedding-model", "none", "--access-log", "-"],
                env={"GW_TEST_KEY": KEY})
    yield {"gw": gw, "reps": reps, "ports": ports, "stub": stub, "key": KEY}
    gw.stop()
    for r in reps:
        r.kill()
    stub.stop()


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60 * SLOW)


def chat(c, model, text, **kw):
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                     max_tokens=kw.pop("max_tokens", 6), temperature=0, **kw)


def quick(c, text):
    """The cheapest real request (a few prompt tokens, one generated): for the
    load and failover phases, so a sanitizer build's slow engine stays fast."""
    r = c.completions.create(model="smol", prompt=text, max_tokens=1, temperature=0)
    assert r.choices[0].finish_reason in ("length", "stop")
    return r


def upstream_series(gw, name):
    """{api_base: value} of a per-replica series of model smol."""
    out = {}
    for k, v in metrics(gw).items():
        m = re.match(name + r'\{model="smol",upstream="([^"]+)"\}', k)
        if m:
            out[m.group(1)] = v
    return out


def test_official_client_equal_to_direct(cluster):
    gw, rep = cluster["gw"], cluster["reps"][0]
    direct = chat(client(rep.url), "default", "Name a colour.")
    via = chat(client(gw.url), "smol", "Name a colour.")
    assert via.choices[0].message.content == direct.choices[0].message.content
    assert via.choices[0].finish_reason == direct.choices[0].finish_reason
    assert via.usage.prompt_tokens == direct.usage.prompt_tokens
    assert via.usage.completion_tokens == direct.usage.completion_tokens
    assert via.model == "smol"
    # streaming: the same text, chunk by chunk, usage at the end
    stream = chat(client(gw.url), "smol", "Name a fruit.", stream=True,
                  stream_options={"include_usage": True})
    parts, usage = [], None
    for ch in stream:
        if ch.choices and ch.choices[0].delta.content:
            parts.append(ch.choices[0].delta.content)
        if ch.usage:
            usage = ch.usage
    direct2 = chat(client(rep.url), "default", "Name a fruit.")
    assert "".join(parts) == direct2.choices[0].message.content
    assert len(parts) >= 2  # passed through as it came, not as one blob
    assert usage.completion_tokens == direct2.usage.completion_tokens
    # completions too
    c = client(gw.url).completions.create(model="smol", prompt="The sky is", max_tokens=5,
                                          temperature=0)
    d = client(rep.url).completions.create(model="default", prompt="The sky is", max_tokens=5,
                                           temperature=0)
    assert c.choices[0].text == d.choices[0].text
    models = json.loads(request(gw, "GET", "/v1/models")[2])
    smol = [m for m in models["data"] if m["id"] == "smol"][0]
    assert smol["meta"]["backend"] == "upstream"


def test_cache_hit_does_not_call_upstream(cluster):
    gw = cluster["gw"]
    c = client(gw.url)
    first = c.chat.completions.with_raw_response.create(
        model="smol", messages=[{"role": "user", "content": "cache me please"}], max_tokens=5,
        temperature=0)
    assert first.headers["x-cache"] == "MISS"
    before = sum(upstream_series(gw, "barista_upstream_requests_total").values())
    second = c.chat.completions.with_raw_response.create(
        model="smol", messages=[{"role": "user", "content": "cache me please"}], max_tokens=5,
        temperature=0)
    assert second.headers["x-cache"] == "HIT"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert sum(upstream_series(gw, "barista_upstream_requests_total").values()) == before


@pytest.mark.parametrize("kw,word", [
    ({"n": 2}, "n"),
    ({"logit_bias": {"42": -100}}, "logit_bias"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {}}}}], "tool_choice": "required"}, "tools"),
])
def test_fields_not_passed_through_are_400s(cluster, kw, word):
    """n > 1, logit_bias, response_format and tools (issue 17) are not passed to
    upstreams yet: a 400 naming the field, and no upstream is called."""
    gw = cluster["gw"]
    before = sum(upstream_series(gw, "barista_upstream_requests_total").values())
    with pytest.raises(openai.BadRequestError) as ei:
        chat(client(gw.url), "smol", "Say hi.", **kw)
    assert ei.value.status_code == 400
    assert ei.value.body["param"] == word
    assert ei.value.body["code"] == "unsupported_parameter"
    assert sum(upstream_series(gw, "barista_upstream_requests_total").values()) == before


def test_requests_spread_over_replicas(cluster):
    gw = cluster["gw"]
    before = upstream_series(gw, "barista_upstream_requests_total")
    errs = []

    def worker(i):
        try:
            for k in range(2):
                quick(client(gw.url), f"spread {i} {k}")
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs
    after = upstream_series(gw, "barista_upstream_requests_total")
    got = {k: after[k] - before.get(k, 0) for k in after}
    assert sum(got.values()) == 8
    assert all(v >= 1 for v in got.values()), got  # each replica served some


def test_key_sent_but_never_shown(cluster):
    gw, stub = cluster["gw"], cluster["stub"]
    chat(client(gw.url), "stub-ok", "hello")
    assert any(c["auth"] == "Bearer " + KEY for c in stub.calls)
    for path in ("/v1/config", "/metrics", "/v1/models"):
        assert KEY not in request(gw, "GET", path)[2].decode()
    assert KEY not in gw.log


def test_priority_and_body_reach_the_upstream(cluster):
    """A batch-class request (X-Priority: batch, or a body priority of 10) reaches the
    upstream with X-Priority: batch; an interactive one with none. The body the gateway
    writes is the request's: messages (escapes intact), sampling values, a stream with
    usage, the upstream's model id."""
    gw, stub = cluster["gw"], cluster["stub"]
    c = client(gw.url)
    n0 = len(stub.calls)
    chat(c, "stub-ok", "prio one", extra_headers={"X-Priority": "batch"})
    chat(c, "stub-ok", "prio two", extra_body={"priority": 10})
    text = 'prio three "quoted" \\ tab\t newline\n \u00e9 \x01'
    chat(c, "stub-ok", text, extra_headers={"X-Priority": "interactive"}, top_p=0.5, seed=-7,
         stop=["\n\n", "END"])
    posts = [x for x in stub.calls[n0:] if x["mode"] == "ok"]
    assert [x["priority"] for x in posts] == ["batch", "batch", None]
    b = json.loads(posts[2]["body"])
    assert b["model"] == "stub"
    assert b["messages"] == [{"role": "user", "content": text}]
    assert b["max_tokens"] == 6 and b["temperature"] == 0 and b["top_p"] == 0.5
    assert b["seed"] == -7 and b["stop"] == ["\n\n", "END"]
    assert b["stream"] is True and b["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("mode,status", [("500", 502), ("badjson", 502), ("reset", 502),
                                         ("hang", 504)])
def test_faulty_upstream_clean_error(cluster, mode, status):
    gw = cluster["gw"]
    c = client(gw.url)
    with pytest.raises(openai.APIStatusError) as ei:
        chat(c, f"stub-{mode}", "fault")
    assert ei.value.status_code == status
    msg = ei.value.response.json()["error"]["message"]
    assert "upstream http://127.0.0.1:" in msg and "stub-" in msg
    assert KEY not in msg
    # streaming: also an HTTP error (nothing had been sent yet)
    with pytest.raises(openai.APIStatusError) as ei:
        for _ in chat(c, f"stub-{mode}", "fault", stream=True):
            pass
    assert ei.value.status_code == status


def test_cut_stream_ends_cleanly(cluster):
    gw = cluster["gw"]
    c = client(gw.url)
    with pytest.raises(openai.APIStatusError) as ei:  # non-stream: nothing was sent
        chat(c, "stub-cut", "cut")
    assert ei.value.status_code == 502
    # a stream that had started gets an error event, then the end (no hang)
    got = []
    with pytest.raises(openai.APIError):
        for ch in chat(c, "stub-cut", "cut", stream=True):
            if ch.choices and ch.choices[0].delta.content:
                got.append(ch.choices[0].delta.content)
    assert "".join(got) == "Hello stub"
    # the gateway is fine afterwards
    assert chat(c, "stub-ok", "after").choices[0].message.content == "Hello stub"


def test_retry_on_another_replica(cluster):
    gw = cluster["gw"]
    for i in range(6):  # some land on the 500 replica first, then retry
        r = chat(client(gw.url), "mixed", f"retry {i}")
        assert r.choices[0].message.content == "Hello stub"


def test_hedging_beats_a_straggler(barista_bin, tmp_path):
    """router_settings.hedging: a second attempt after the group's p95 time to
    first byte; the first answer wins and the straggler is cancelled."""
    stub = Stub()
    cfg = tmp_path / "hedge.yaml"
    cfg.write_text(
        "model_list:\n"
        f"  - model_name: h\n    litellm_params: {{model: openai/stub, api_base: '{stub.base('slowable')}'}}\n"
        f"  - model_name: h\n    litellm_params: {{model: openai/stub, api_base: '{stub.base('ok')}'}}\n"
        "router_settings: {routing_strategy: simple-shuffle, hedging: true}\n")
    gw = Server(barista_bin, None, ["--models", str(cfg), "--embedding-model", "none"])
    try:
        c = client(gw.url)
        for i in range(25):  # p95 of fast answers
            chat(c, "h", f"warm {i}")
        stub.slow(3)
        worst = 0
        for i in range(16):
            t0 = time.time()
            assert chat(c, "h", f"hedge {i}").choices[0].message.content == "Hello stub"
            worst = max(worst, time.time() - t0)
        m = metrics(gw)
        assert m['barista_upstream_hedges_total{model="h"}'] >= 1
        assert m['barista_upstream_hedge_wins_total{model="h"}'] >= 1
        assert worst < 1.5 * SLOW  # no request waited for the 2 s straggler
        slowable = sum(1 for x in stub.calls if x["mode"] == "slowable")
        assert slowable >= 1
    finally:
        gw.stop()
        stub.stop()


def test_active_health_checks(barista_bin, tmp_path):
    """router_settings.health_check_interval: replicas are checked without any
    traffic; a failing check ejects, a passing one brings it back."""
    stub = Stub()
    cfg = tmp_path / "health.yaml"
    cfg.write_text(
        "model_list:\n"
        f"  - model_name: hc\n    litellm_params: {{model: openai/stub, api_base: '{stub.base('ok')}'}}\n"
        "  - model_name: hc\n    litellm_params: {model: openai/stub, api_base: 'http://127.0.0.1:9/v1'}\n"
        "router_settings: {health_check_interval: 0.2, allowed_fails: 1, cooldown_time: 60}\n")
    gw = Server(barista_bin, None, ["--models", str(cfg), "--embedding-model", "none"])
    try:
        def ejected():
            return {k: v for k, v in metrics(gw).items() if k.startswith("barista_upstream_ejected")}
        dead = 'barista_upstream_ejected{model="hc",upstream="http://127.0.0.1:9/v1"}'
        live = dead.replace("http://127.0.0.1:9/v1", stub.base("ok") + "/v1")
        assert wait_for(lambda: ejected().get(dead) == 1, 10)  # no request was sent
        assert ejected()[live] == 0
        stub.httpd.healthy = False
        assert wait_for(lambda: ejected().get(live) == 1, 10)
        stub.httpd.healthy = True  # back well before its 60 s cooldown
        assert wait_for(lambda: ejected().get(live) == 0, 10)
        assert all(c["mode"] == "GET" for c in stub.calls)
        assert chat(client(gw.url), "hc", "after").choices[0].message.content == "Hello stub"
    finally:
        gw.stop()
        stub.stop()


def test_replica_killed_and_frozen(cluster, barista_bin, gguf_path):
    gw, reps, ports = cluster["gw"], cluster["reps"], cluster["ports"]
    base = [f"http://127.0.0.1:{p}/v1" for p in ports]
    c = client(gw.url)

    def ejections(i):
        return upstream_series(gw, "barista_upstream_ejections_total")[base[i]]

    def served(i):
        return upstream_series(gw, "barista_upstream_requests_total")[base[i]]

    # killed: every request still succeeds (retried), the dead one is ejected
    e0 = ejections(1)
    errs, ok = [], []
    stop = threading.Event()

    def load(i):  # steady load from LOAD clients
        k = 0
        while not stop.is_set():
            try:
                ok.append(quick(client(gw.url), f"load {i} {k}"))
            except Exception as e:  # noqa: BLE001
                errs.append(e)
            k += 1

    ts = [threading.Thread(target=load, args=(i,)) for i in range(LOAD)]
    for t in ts:
        t.start()
    wait_for(lambda: len(ok) >= 2 * LOAD, 20)
    reps[1].kill()
    n_kill = len(ok)
    wait_for(lambda: len(ok) >= n_kill + 2 * LOAD and ejections(1) > e0, 30)
    stop.set()
    for t in ts:
        t.join()
    assert not errs, errs[:3]  # zero failed requests
    assert ejections(1) > e0
    # back on its port: the breaker's trial request closes it again
    reps[1] = replica(barista_bin, gguf_path, ports[1])
    n0 = served(1)
    assert wait_for(lambda: quick(c, f"probe {time.time()}") and
                    served(1) > n0 and
                    upstream_series(gw, "barista_upstream_ejected")[base[1]] == 0, 20, 0.3)
    # frozen (SIGSTOP): requests time out there and move to the other one
    e0 = ejections(0)
    reps[0].proc.send_signal(signal.SIGSTOP)
    try:
        for i in range(2):
            assert quick(c, f"frozen {i}")
        assert wait_for(lambda: ejections(0) > e0 or
                        (quick(c, f"f{time.time()}") and False), 30, 0.1)
        n1 = served(1)
        for i in range(3):  # while it is out, the other replica takes everything
            quick(c, f"moved {i}")
        assert served(1) >= n1 + 3
    finally:
        reps[0].proc.send_signal(signal.SIGCONT)
    n0 = served(0)
    assert wait_for(lambda: quick(c, f"thaw {time.time()}") and
                    served(0) > n0 and
                    upstream_series(gw, "barista_upstream_ejected")[base[0]] == 0, 20, 0.3)
    assert gw.proc.poll() is None


def test_admission_rate_limits_and_histograms(barista_bin, tmp_path):
    """Latency control on upstream groups: a group full to its
    max_parallel_requests has a real est_wait, so a request whose budget
    (X-Timeout-Ms) it cannot meet gets 503 + Retry-After at once instead of
    queueing; a group whose every replica is at its rpm this minute answers 429
    rate_limit_exceeded naming it; /metrics has per-upstream TTFB and duration
    histograms whose counts match the attempts sent."""
    stub = Stub()
    cfg = tmp_path / "ctl.yaml"
    cfg.write_text(
        "model_list:\n"
        f"  - model_name: adm\n    litellm_params: {{model: openai/stub, "
        f"api_base: '{stub.base('slowable')}', max_parallel_requests: 1}}\n"
        f"  - model_name: lim\n    litellm_params: {{model: openai/stub, "
        f"api_base: '{stub.base('ok')}/a', rpm: 2}}\n"
        f"  - model_name: lim\n    litellm_params: {{model: openai/stub, "
        f"api_base: '{stub.base('ok')}/b', rpm: 2}}\n")
    gw = Server(barista_bin, None, ["--models", str(cfg), "--embedding-model", "none"])
    try:
        c = client(gw.url)
        body = json.dumps({"model": "adm", "messages": [{"role": "user", "content": "q"}],
                           "max_tokens": 4})
        # admission: measured service time first, then a saturated group
        for i in range(3):
            assert chat(c, "adm", f"warm {i}").choices[0].message.content == "Hello stub"
        st, _, _ = request(gw, "POST", "/v1/chat/completions", body, {"X-Timeout-Ms": "300"})
        assert st == 200  # a free group meets a 300 ms budget
        stub.slow(2)
        slow = [threading.Thread(target=chat, args=(c, "adm", f"slow {i}")) for i in range(2)]
        for t in slow:
            t.start()
        inflight = 'barista_upstream_in_flight{model="adm",upstream="%s/v1"}' % stub.base(
            "slowable")
        assert wait_for(lambda: metrics(gw).get(inflight) == 2, 5)
        time.sleep(0.3)  # the oldest attempt's age is the service time now
        n_calls = len(stub.calls)
        t0 = time.time()
        st, hdr, out = request(gw, "POST", "/v1/chat/completions", body, {"X-Timeout-Ms": "300"})
        took = time.time() - t0
        assert st == 503, out
        assert json.loads(out)["error"]["code"] == "overloaded"
        assert int(hdr["retry-after"]) >= 1
        assert took < 0.25 * SLOW  # refused at once, not after the budget
        assert len(stub.calls) == n_calls  # never sent upstream
        st, _, _ = request(gw, "POST", "/v1/chat/completions", body)  # no budget: served
        assert st == 200
        for t in slow:
            t.join()

        # rpm: 2 per replica and minute; the 5th request of a minute finds none
        left = 60 - time.monotonic() % 60  # the gateway counts minutes of CLOCK_MONOTONIC
        if left < 10:
            time.sleep(left + 0.5)
        for i in range(4):
            assert chat(c, "lim", f"r {i}").choices[0].message.content == "Hello stub"
        with pytest.raises(openai.RateLimitError) as ei:
            chat(c, "lim", "r 5")
        err = ei.value
        assert err.code == "rate_limit_exceeded" and "'lim'" in err.message
        assert 1 <= int(err.response.headers["retry-after"]) <= 60
        m = metrics(gw)
        assert m['barista_rejected_requests_total{reason="upstream_limit"}'] == 1
        reqs = {k: v for k, v in m.items()
                if k.startswith('barista_upstream_requests_total{model="lim"')}
        assert sorted(reqs.values()) == [2, 2]  # P2C skipped the replica at its rpm

        # histograms: one observation per attempt, per replica
        for rep in ("a", "b"):
            lab = 'model="lim",upstream="%s/%s/v1"' % (stub.base("ok"), rep)
            assert m['barista_upstream_ttfb_seconds_count{%s}' % lab] == 2
            assert m['barista_upstream_duration_seconds_count{%s}' % lab] == 2
            assert m['barista_upstream_duration_seconds_bucket{%s,le="+Inf"}' % lab] == 2
            assert m['barista_upstream_ttfb_seconds_bucket{%s,le="30"}' % lab] == 2
            assert 0 < m['barista_upstream_duration_seconds_sum{%s}' % lab] < 2
        adm = 'model="adm",upstream="%s/v1"' % stub.base("slowable")
        assert m['barista_upstream_duration_seconds_count{%s}' % adm] == 7
        assert m['barista_upstream_duration_seconds_bucket{%s,le="1"}' % adm] == 5  # 2 slow
    finally:
        gw.stop()
        stub.stop()
