"""The exact-match response cache end to end (docs/CACHE.md): real barista
processes, the openai client, raw HTTP. Redis is in test_cache_redis.py."""
import copy
import json
import os
import threading
import time

import openai
import pytest

from serverutil import SLOW, Server, chat, metrics, request, sse_text, wait_for

MSG = [{"role": "user", "content": "Name a fruit."}]
BASE = {"model": "default", "messages": MSG, "temperature": 0, "max_tokens": 6}
ADMIN = {"Authorization": "Bearer adm-secret"}


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--admin-key", "adm-secret"])
    yield s
    assert s.stop() == 0


def stats(server):
    st, _, body = request(server, "GET", "/v1/cache/stats", headers=ADMIN)
    assert st == 200
    return json.loads(body)


def body_with(**kw):
    b = copy.deepcopy(BASE)
    b.update(kw)
    return b


def text_of(resp):
    return resp["choices"][0]["message"]["content"]


def test_openai_client_miss_then_hit(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="k-openai", timeout=60 * SLOW,
                           max_retries=0)
    msgs = [{"role": "user", "content": "Name a planet."}]
    raw1 = client.chat.completions.with_raw_response.create(model="default", messages=msgs,
                                                            temperature=0, max_tokens=6)
    raw2 = client.chat.completions.with_raw_response.create(model="default", messages=msgs,
                                                            temperature=0, max_tokens=6)
    assert raw1.headers["x-cache"] == "MISS"
    assert raw2.headers["x-cache"] == "HIT"
    assert raw2.headers["x-cache-tier"] == "L1"
    assert int(raw2.headers["age"]) >= 0
    assert raw1.headers["x-cache-key"] == raw2.headers["x-cache-key"]
    r1, r2 = raw1.parse(), raw2.parse()
    assert r1.choices[0].message.content == r2.choices[0].message.content
    assert r1.choices[0].finish_reason == r2.choices[0].finish_reason
    assert r1.usage.completion_tokens == r2.usage.completion_tokens
    assert r1.id != r2.id


@pytest.mark.parametrize("change", [
    {"temperature": 0, "seed": 7},
    {"max_tokens": 5},
    {"messages": [{"role": "user", "content": "Name a fruit!"}]},
    {"messages": [{"role": "user", "content": "Name a fruit. "}]},
    {"messages": [{"role": "system", "content": "Be brief."}] + MSG},
    {"stop": ["xyz"]},
    {"top_k": 5},
    {"logprobs": True},
], ids=["seed", "max_tokens", "content", "whitespace", "system", "stop", "top_k", "logprobs"])
def test_each_field_changes_the_key(server, change):
    base = body_with(messages=[{"role": "user", "content": "Name a fruit."}])
    chat(server, base)
    st, h, _ = chat(server, base)
    assert h["x-cache"] == "HIT"
    st, h, r = chat(server, body_with(**change))
    assert st == 200 and h["x-cache"] == "MISS", change


def test_reordered_json_and_number_spelling_hit(server):
    b = body_with(messages=[{"role": "user", "content": "Name a tree."}])
    st, h1, r1 = chat(server, b)
    assert h1["x-cache"] == "MISS"
    raw = ('{"max_tokens": 6.0, "temperature": 0.0, "messages": [{"content": "Name a tree.", '
           '"role": "user"}], "model": "default"}')
    st, h2, body = request(server, "POST", "/v1/chat/completions", raw)
    assert st == 200 and h2["x-cache"] == "HIT"
    assert h2["x-cache-key"] == h1["x-cache-key"]
    assert text_of(json.loads(body)) == text_of(r1)


def test_model_alias_shares_but_unknown_model_is_404(server):
    b = body_with(messages=[{"role": "user", "content": "Name a bird."}])
    chat(server, b)
    _, _, models = request(server, "GET", "/v1/models")
    real_id = json.loads(models)["data"][0]["id"]
    st, h, _ = chat(server, dict(b, model=real_id))
    assert h["x-cache"] == "HIT"  # "default" resolves to the same model (docs/CACHE.md)
    st, h, _ = chat(server, dict(b, model="other-model"))
    assert st == 404 and "x-cache" not in h


@pytest.mark.parametrize("bad,status", [
    ({"stream": "yes"}, 400),
    ({"stream_options": {"include_usage": True}}, 400),
    ({"stream": True, "stream_options": {"include_usage": 1}}, 400),
    ({"user": 5}, 400),
    ({"model": 7}, 400),
    ({"model": "other-model"}, 404),
], ids=["stream", "stream_options_no_stream", "include_usage", "user", "model_type", "model"])
def test_hit_still_validates_the_members_the_key_leaves_out(server, bad, status):
    # a hit skips the full validation (the keyed members equal a stored, valid
    # request's) but not the members the key excludes
    b = body_with(messages=[{"role": "user", "content": "Name a stone."}])
    chat(server, b)
    st, h, _ = chat(server, b)
    assert h["x-cache"] == "HIT"
    st, h, body = chat(server, dict(b, **bad))
    assert st == status, body
    assert "x-cache" not in h


def test_plain_hits_reuse_one_rendering(server):
    b = body_with(messages=[{"role": "user", "content": "Name a metal."}])
    chat(server, b)
    bodies = [request(server, "POST", "/v1/chat/completions", json.dumps(b)) for _ in range(3)]
    assert all(st == 200 and h["x-cache"] == "HIT" for st, h, _ in bodies)
    # the stored rendering (its id included) is replayed byte for byte
    assert bodies[1][2] == bodies[2][2]
    assert int(bodies[2][1]["content-length"]) == len(bodies[2][2])


def test_byte_identical_repeats_keep_their_own_delivery(server):
    # repeats of the same bytes skip parsing (the raw-request memo); what the
    # first full decision said about delivery and headers must still hold
    b = body_with(messages=[{"role": "user", "content": "Name a bird."}])
    chat(server, b)
    for _ in range(3):
        st, h, r = chat(server, b)
        assert st == 200 and h["x-cache"] == "HIT" and r["object"] == "chat.completion"
    sb = body_with(messages=b["messages"], stream=True,
                   stream_options={"include_usage": True})
    for _ in range(3):
        st, h, ev = chat(server, sb)
        assert st == 200 and h["x-cache"] == "HIT"
        assert h["content-type"].startswith("text/event-stream")
        assert json.loads(ev[-2])["usage"]["completion_tokens"] >= 1
    # the same bytes under other headers are decided again
    assert chat(server, b, headers={"Cache-Control": "no-cache"})[1]["x-cache"] == "MISS"
    assert chat(server, b, headers={"X-Cache-Namespace": "memo"})[1]["x-cache"] == "MISS"
    assert chat(server, b, path="/v1/completions")[0] == 400
    assert chat(server, b)[1]["x-cache"] == "HIT"


def test_sampled_request_bypasses(server):
    b = body_with(temperature=0.8)
    for _ in range(2):
        st, h, _ = chat(server, b)
        assert st == 200 and h["x-cache"] == "BYPASS"
    st, h, _ = chat(server, b, headers={"Cache-Control": "max-age=60"})
    assert h["x-cache"] == "MISS"  # opted in
    st, h, _ = chat(server, b, headers={"Cache-Control": "max-age=60"})
    assert h["x-cache"] == "HIT"


def test_no_store_and_no_cache(server):
    b = body_with(messages=[{"role": "user", "content": "Name a river."}])
    st, h, _ = chat(server, b, headers={"Cache-Control": "no-store"})
    assert h["x-cache"] == "MISS"
    st, h, _ = chat(server, b)
    assert h["x-cache"] == "MISS"  # nothing was stored
    st, h, _ = chat(server, b)
    assert h["x-cache"] == "HIT"
    st, h, _ = chat(server, b, headers={"Cache-Control": "no-cache"})
    assert h["x-cache"] == "MISS"  # not read (but written again)
    st, h, _ = chat(server, b, headers={"Cache-Control": "no-store"})
    assert h["x-cache"] == "HIT"  # no-store still reads


def test_ttl_expiry_max_age(server):
    b = body_with(messages=[{"role": "user", "content": "Name a lake."}])
    st, h, _ = chat(server, b, headers={"Cache-Control": "max-age=1"})
    assert h["x-cache"] == "MISS"
    st, h, _ = chat(server, b)
    assert h["x-cache"] == "HIT"
    time.sleep(1.3)
    st, h, _ = chat(server, b)
    assert h["x-cache"] == "MISS"


def test_tenants_never_share(server):
    b = body_with(messages=[{"role": "user", "content": "Name a mountain."}])
    ka, kb = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    assert chat(server, b, headers=ka)[1]["x-cache"] == "MISS"
    assert chat(server, b, headers=ka)[1]["x-cache"] == "HIT"
    assert chat(server, b, headers=kb)[1]["x-cache"] == "MISS"
    assert chat(server, b)[1]["x-cache"] == "MISS"
    na = dict(ka, **{"X-Cache-Namespace": "team-1"})
    assert chat(server, b, headers=na)[1]["x-cache"] == "MISS"
    assert chat(server, b, headers=na)[1]["x-cache"] == "HIT"
    nb = dict(kb, **{"X-Cache-Namespace": "team-1"})
    assert chat(server, b, headers=nb)[1]["x-cache"] == "MISS"


def test_streamed_miss_then_streamed_and_plain_hits(server):
    b = body_with(messages=[{"role": "user", "content": "Name a sea."}], stream=True,
                  stream_options={"include_usage": True})
    st, h1, ev1 = chat(server, b)
    assert st == 200 and h1["x-cache"] == "MISS"
    st, h2, ev2 = chat(server, b)
    assert st == 200 and h2["x-cache"] == "HIT" and h2["x-cache-tier"] == "L1"
    assert sse_text(ev1) == sse_text(ev2) and sse_text(ev1)
    assert ev2[-1] == "[DONE]"
    first = json.loads(ev2[0])["choices"][0]["delta"]
    assert first["role"] == "assistant"
    fin = [json.loads(e)["choices"][0]["finish_reason"] for e in ev2[:-1]
           if json.loads(e)["choices"]]
    assert fin[-1] in ("stop", "length")
    usage = json.loads(ev2[-2])["usage"]
    assert usage == json.loads(ev1[-2])["usage"]
    assert len(ev2) >= 4  # role, text chunks, final, usage, [DONE]
    plain = dict(b, stream=False)
    del plain["stream_options"]
    st, h3, r = chat(server, plain)
    assert h3["x-cache"] == "HIT"
    assert text_of(r) == sse_text(ev1)


def test_logprobs_replayed(server):
    b = body_with(messages=[{"role": "user", "content": "Name a color."}], logprobs=True,
                  top_logprobs=2)
    st, _, r1 = chat(server, b)
    st, h, r2 = chat(server, b)
    assert h["x-cache"] == "HIT"
    assert r1["choices"][0]["logprobs"] == r2["choices"][0]["logprobs"]
    st, h, ev = chat(server, dict(b, stream=True))
    assert h["x-cache"] == "HIT"
    toks = [c["token"] for e in ev[:-1] for ch in json.loads(e)["choices"]
            for c in ((ch.get("logprobs") or {}).get("content") or [])]
    assert toks == [c["token"] for c in r1["choices"][0]["logprobs"]["content"]]


def test_completions_endpoint_cached(server):
    b = {"model": "default", "prompt": "Once upon a time", "temperature": 0, "max_tokens": 5}
    st, h, r1 = chat(server, b, path="/v1/completions")
    assert h["x-cache"] == "MISS"
    st, h, r2 = chat(server, b, path="/v1/completions")
    assert h["x-cache"] == "HIT" and r1["choices"][0]["text"] == r2["choices"][0]["text"]


def test_purge_endpoints_and_authorization(server):
    b = body_with(messages=[{"role": "user", "content": "Name a city."}])
    _, h, _ = chat(server, b)
    key = h["x-cache-key"]
    assert chat(server, b)[1]["x-cache"] == "HIT"
    assert request(server, "DELETE", f"/v1/cache/{key}")[0] == 401
    assert request(server, "DELETE", f"/v1/cache/{key}",
                   headers={"Authorization": "Bearer wrong"})[0] == 403
    assert request(server, "GET", "/v1/cache/stats")[0] == 401
    st, _, body = request(server, "DELETE", f"/v1/cache/{key}", headers=ADMIN)
    assert st == 200 and json.loads(body)["l1_deleted"] == 1
    assert chat(server, b)[1]["x-cache"] == "MISS"
    assert request(server, "DELETE", "/v1/cache/nothex", headers=ADMIN)[0] == 404
    # by namespace: only that tenant's entries go
    na = {"Authorization": "Bearer key-n", "X-Cache-Namespace": "ns-1"}
    chat(server, b, headers=na)
    assert chat(server, b, headers=na)[1]["x-cache"] == "HIT"
    st, _, body = request(server, "DELETE", "/v1/cache?namespace=ns-1&api_key=key-n",
                          headers=ADMIN)
    assert st == 200 and json.loads(body)["l1_deleted"] >= 1
    assert chat(server, b, headers=na)[1]["x-cache"] == "MISS"
    assert chat(server, b)[1]["x-cache"] == "HIT"  # other namespaces untouched
    # a purge never widens on a typo: unknown, repeated or malformed
    # parameters and a bare DELETE are 400s that delete nothing
    n_before = stats(server)["entries"]
    for q in ["", "?ns=ns-1", "?Namespace=ns-1", "?namespace", "?all=yes", "?all=1",
              "?all=true&namespace=x", "?namespace=a&namespace=b", "?x=1&namespace=a", "?&"]:
        st, _, body = request(server, "DELETE", "/v1/cache" + q, headers=ADMIN)
        assert st == 400, q
        err = json.loads(body)["error"]
        assert err["code"] == "invalid_value" and err["message"], q
    assert stats(server)["entries"] == n_before >= 2
    # everything: explicitly
    st, _, body = request(server, "DELETE", "/v1/cache?all=true", headers=ADMIN)
    assert st == 200 and json.loads(body)["l1_deleted"] >= 2
    assert stats(server)["entries"] == 0
    assert chat(server, b)[1]["x-cache"] == "MISS"


def test_metrics_series(server):
    m = metrics(server)
    assert m['barista_cache_requests_total{result="hit",tier="l1"}'] >= 1
    assert m['barista_cache_requests_total{result="miss",tier="none"}'] >= 1
    assert m['barista_cache_requests_total{result="bypass",tier="none"}'] >= 1
    assert "barista_cache_entries" in m and "barista_cache_bytes" in m
    assert "barista_cache_evictions_total" in m


def test_admin_api_off_without_admin_key(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--cache-mem", "16384"])
    try:
        assert request(s, "GET", "/v1/cache/stats", headers=ADMIN)[0] == 404
        assert request(s, "DELETE", "/v1/cache?all=true", headers=ADMIN)[0] == 404
    finally:
        assert s.stop() == 0


def test_eviction_under_small_budget(barista_bin, gguf_path):
    budget = 8192
    s = Server(barista_bin, gguf_path, args=["--cache-mem", str(budget), "--admin-key",
                                             "adm-secret"])
    try:
        for i in range(24):
            st, h, _ = chat(s, body_with(max_tokens=4,
                                         messages=[{"role": "user", "content": f"Count {i}"}]))
            assert st == 200 and h["x-cache"] == "MISS"
        st = stats(s)
        assert st["l1"]["evictions"] > 0
        assert 0 < st["entries"] < 24
        assert st["bytes"] <= budget
        m = metrics(s)
        assert m["barista_cache_evictions_total"] == st["l1"]["evictions"]
    finally:
        assert s.stop() == 0


def test_ten_identical_requests_coalesce_into_one_generation(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--parallel", "1", "--admin-key", "adm-secret"])
    try:
        # a sampled blocker holds the only engine slot, so the twins arrive while queued
        blocker = body_with(temperature=0.9, max_tokens=12,
                            messages=[{"role": "user", "content": "Tell a story."}])
        bt = threading.Thread(target=chat, args=(s, blocker))
        bt.start()
        wait_for(lambda: metrics(s).get("barista_engine_active_sequences", 0) >= 1, timeout=10)
        b = body_with(max_tokens=8, messages=[{"role": "user", "content": "Name a dog."}])
        out = [None] * 10

        def one(i):
            req = dict(b, stream=True) if i % 2 else b
            out[i] = chat(s, req)
        ts = [threading.Thread(target=one, args=(i,)) for i in range(10)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60 * SLOW)
        bt.join(60 * SLOW)
        texts = set()
        kinds = []
        for st, h, r in out:
            assert st == 200
            kinds.append(h["x-cache"])
            texts.add(sse_text(r) if isinstance(r, list) else text_of(r))
        assert len(texts) == 1 and texts.pop()
        assert sorted(kinds) == ["COALESCED"] * 9 + ["MISS"]
        st = stats(s)
        assert st["requests"]["miss"] == 1 and st["requests"]["coalesced"] == 9
        assert st["inflight"] == 0
        m = metrics(s)
        # two generations in the engine: the blocker and ONE for the ten twins
        usage_b = chat(s, b)[2]["usage"]
        assert m["barista_generated_tokens_total"] <= 12 + usage_b["completion_tokens"]
    finally:
        assert s.stop() == 0


def test_joiner_leaves_alone(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--parallel", "1", "--admin-key", "adm-secret"])
    try:
        blocker = body_with(temperature=0.9, max_tokens=12,
                            messages=[{"role": "user", "content": "Tell a joke."}])
        bt = threading.Thread(target=chat, args=(s, blocker))
        bt.start()
        wait_for(lambda: metrics(s).get("barista_engine_active_sequences", 0) >= 1, timeout=10)
        b = body_with(max_tokens=8, messages=[{"role": "user", "content": "Name a cat."}])
        res = {}
        t = threading.Thread(target=lambda: res.setdefault("a", chat(s, b)))
        t.start()
        wait_for(lambda: stats(s)["inflight"] == 1, timeout=10)
        # a twin connects and leaves before the answer
        c = s.connect()
        data = json.dumps(b).encode()
        c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                  + str(len(data)).encode() + b"\r\n\r\n" + data)
        wait_for(lambda: stats(s)["requests"]["coalesced"] == 1, timeout=10)
        c.close()
        t.join(60 * SLOW)
        bt.join(60 * SLOW)
        st, h, r = res["a"]
        assert st == 200 and h["x-cache"] == "MISS" and text_of(r)
        assert chat(s, b)[1]["x-cache"] == "HIT"
    finally:
        assert s.stop() == 0


def test_snapshot_round_trip_and_corrupt_file(barista_bin, gguf_path, tmp_path):
    path = str(tmp_path / "cache.snap")
    b = body_with(messages=[{"role": "user", "content": "Name a star."}])
    s = Server(barista_bin, gguf_path, args=["--cache-file", path])
    try:
        st, h, r1 = chat(s, b)
        assert h["x-cache"] == "MISS"
    finally:
        assert s.stop() == 0
    assert os.path.getsize(path) > 0
    assert "1 entries written" in s.log
    s = Server(barista_bin, gguf_path, args=["--cache-file", path])
    try:
        st, h, r2 = chat(s, b)
        assert h["x-cache"] == "HIT" and text_of(r2) == text_of(r1)
    finally:
        assert s.stop() == 0
    with open(path, "r+b") as f:
        f.seek(20)
        f.write(b"\xff\xfe garbage")
    s = Server(barista_bin, gguf_path, args=["--cache-file", path])
    try:
        assert "warning" in s.log and "starting with an empty cache" in s.log
        st, h, _ = chat(s, b)
        assert st == 200 and h["x-cache"] == "MISS"
        assert chat(s, b)[1]["x-cache"] == "HIT"
    finally:
        assert s.stop() == 0
