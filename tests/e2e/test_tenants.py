"""Tenants end to end (docs/TENANTS.md): a keys file of SHA-256 digests, each
key's tenant its own cache namespace, Bearer and api-key headers, a model
list answered as 404, SIGHUP reload without dropping a connection, rpm/tpm
limits with OpenAI's 429 and x-ratelimit-* headers, and two replicas holding
one limit through a real Redis. Requests go through the official client
(max_retries=0) where it can express them."""
import hashlib
import json
import shutil
import signal
import subprocess
import threading
import time

import openai
import pytest
import redis as redis_py

from serverutil import SLOW, Redis, Server, chat, metrics, request, wait_for

KEYS = {name: f"sk-test-{name}-0123456789" for name in
        ["a", "a2", "x", "b", "c", "d", "g", "adm", "cc", "t", "e", "f", "h", "m"]}


def sha(k):
    return hashlib.sha256(k.encode()).hexdigest()


def keys_yaml(extra=""):
    return f"""keys:
  - key_sha256: {sha(KEYS['a'])}
    tenant: team-a
  - key_sha256: {sha(KEYS['a2'])}   # a second key of team-a: the same namespace
    tenant: team-a
  - {{key_sha256: {sha(KEYS['x'])}, tenant: team-x}}
  - {{key_sha256: {sha(KEYS['b'])}, tenant: team-b, models: [some-other-model]}}
  - {{key_sha256: {sha(KEYS['c'])}, tenant: team-c, rpm: 3}}
  - {{key_sha256: {sha(KEYS['d'])}, tenant: team-d, tpm: 150, priority: 5}}
  - {{key_sha256: {sha(KEYS['adm'])}, tenant: ops, admin: true}}
  - {{key_sha256: {sha(KEYS['cc'])}, tenant: team-cc, max_concurrency: 1}}
  - {{key_sha256: {sha(KEYS['e'])}, tenant: team-e, rpm: 2}}
  - {{key_sha256: {sha(KEYS['f'])}, tenant: team-f, tpm: 300}}
  - {{key_sha256: {sha(KEYS['h'])}, tenant: team-h, tpm: 3000}}
{extra}"""


def body(text, **kw):
    b = {"model": "default", "messages": [{"role": "user", "content": text}],
         "temperature": 0, "max_tokens": 4}
    b.update(kw)
    return b


def bearer(name):
    return {"Authorization": f"Bearer {KEYS[name]}"}


def client(server, name):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEYS[name], timeout=60 * SLOW,
                         max_retries=0)


def ask(server, name, text, **kw):
    """The official client's raw response: (parsed, headers)."""
    raw = client(server, name).chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": text}], temperature=0,
        max_tokens=4, **kw)
    return raw.parse(), raw.headers


@pytest.fixture(scope="module")
def keyfile(tmp_path_factory):
    p = tmp_path_factory.mktemp("keys") / "keys.yaml"
    p.write_text(keys_yaml())
    return p


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path, keyfile):
    s = Server(barista_bin, gguf_path, args=["--keys", str(keyfile)])
    yield s
    assert s.stop() == 0


def test_tenants_have_their_own_cache(server):
    _, h = ask(server, "a", "Name a river.")
    assert h["x-cache"] == "MISS"
    _, h = ask(server, "a", "Name a river.")
    assert h["x-cache"] == "HIT"
    _, h = ask(server, "a2", "Name a river.")  # another key of the same tenant
    assert h["x-cache"] == "HIT"
    _, h = ask(server, "x", "Name a river.")  # another tenant
    assert h["x-cache"] == "MISS"
    # Azure's api-key header names the same tenant as Bearer
    st, h, _ = chat(server, body("Name a river."), headers={"api-key": KEYS["a"]})
    assert st == 200 and h["x-cache"] == "HIT"
    # a sub-namespace of a tenant is apart from its default one
    st, h, _ = chat(server, body("Name a river."),
                    headers={**bearer("a"), "X-Cache-Namespace": "blue"})
    assert st == 200 and h["x-cache"] == "MISS"
    # a client of another tenant naming the same sub-namespace gets nothing of it
    st, h, _ = chat(server, body("Name a river."),
                    headers={**bearer("x"), "X-Cache-Namespace": "blue"})
    assert h["x-cache"] == "MISS"


def test_unknown_or_missing_key_is_401(server):
    with pytest.raises(openai.AuthenticationError) as ei:
        openai.OpenAI(base_url=server.url + "/v1", api_key="sk-nobody", max_retries=0) \
            .chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
    assert ei.value.status_code == 401
    assert request(server, "GET", "/v1/models")[0] == 401
    assert request(server, "GET", "/v1/models", headers={"api-key": "sk-nobody"})[0] == 401
    # a key's prefix or the key with a byte more is another key
    assert request(server, "GET", "/v1/models",
                   headers={"Authorization": "Bearer " + KEYS["a"][:-1]})[0] == 401
    assert request(server, "GET", "/v1/models",
                   headers={"Authorization": "Bearer " + KEYS["a"] + "0"})[0] == 401


def test_model_not_allowed_is_404_like_an_unknown_model(server):
    with pytest.raises(openai.NotFoundError) as denied:
        client(server, "b").chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    with pytest.raises(openai.NotFoundError) as unknown:
        client(server, "a").chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    d, u = denied.value.body, unknown.value.body
    assert d["code"] == u["code"] == "model_not_found"
    assert d["type"] == u["type"] and d["param"] == u["param"] == "model"
    served = client(server, "a").models.list().data[0].id
    assert served not in d["message"]  # the model's existence is not revealed
    # /v1/models lists only what the key may use
    assert client(server, "b").models.list().data == []
    assert request(server, "GET", f"/v1/models/{served}", headers=bearer("b"))[0] == 404
    assert request(server, "GET", f"/v1/models/{served}", headers=bearer("a"))[0] == 200
    # the embeddings endpoint applies the same list
    emb = json.dumps({"model": "default", "input": "hello"})
    st, _, raw = request(server, "POST", "/v1/embeddings", emb, headers=bearer("b"))
    assert st == 404 and json.loads(raw)["error"]["code"] == "model_not_found", raw
    assert request(server, "POST", "/v1/embeddings", emb, headers=bearer("a"))[0] == 200


def test_rpm_limit_429_with_openai_headers(server):
    oks = []
    for i in range(3):
        st, h, _ = chat(server, body("Name a tree."), headers=bearer("c"))
        assert st == 200
        assert h["x-ratelimit-limit-requests"] == "3"
        oks.append(int(h["x-ratelimit-remaining-requests"]))
    assert oks == [2, 1, 0]
    with pytest.raises(openai.RateLimitError) as ei:
        ask(server, "c", "Name a tree.")
    e = ei.value
    assert e.status_code == 429
    assert e.body["code"] == "rate_limit_exceeded" and e.body["type"] == "requests"
    h = e.response.headers
    assert h["x-ratelimit-limit-requests"] == "3" and h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"].endswith("s") and int(h["retry-after"]) >= 1
    # an unlimited tenant's replies carry no rate-limit headers
    _, h = ask(server, "a", "Name a river.")
    assert "x-ratelimit-limit-requests" not in h
    assert metrics(server)['barista_rejected_requests_total{reason="rate_limit"}'] >= 1


def test_concurrency_limit(server):
    # a long stream holds team-cc's only slot while a second request comes
    conn = server.connect()
    data = json.dumps(body("Tell a long story.", max_tokens=400, stream=True)).encode()
    try:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + KEYS["cc"].encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Cache-Control: no-store\r\nContent-Length: " + str(len(data)).encode()
                     + b"\r\n\r\n" + data)
        conn.settimeout(60 * SLOW)
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
        st, h, r = chat(server, body("Name a fish."), headers=bearer("cc"))
        assert st == 429 and r["error"]["type"] == "requests"
        assert "at once" in r["error"]["message"]
    finally:
        conn.close()
    # the slot comes back when the stream's client goes
    wait_for(lambda: chat(server, body("Name a fish."), headers=bearer("cc"))[0] == 200,
             timeout=30 * SLOW)


def test_tpm_limit_429_on_tokens_and_streams_carry_headers(server):
    # each request reserves ~(body bytes / 4) + max_tokens; 150 per minute
    st, h, ev = chat(server, body("Name a bird.", stream=True), headers=bearer("d"))
    assert st == 200 and ev[-1] == "[DONE]"
    assert h["x-ratelimit-limit-tokens"] == "150"
    first = int(h["x-ratelimit-remaining-tokens"])
    assert 0 < first < 150
    refused = None
    for i in range(8):
        st, h, r = chat(server, body(f"Name a bird, {i}."), headers=bearer("d"))
        if st == 429:
            refused = (h, r)
            break
        assert st == 200
    assert refused, "the tokens limit never refused"
    h, r = refused
    assert r["error"]["code"] == "rate_limit_exceeded" and r["error"]["type"] == "tokens"
    assert h["x-ratelimit-limit-tokens"] == "150"
    assert int(h["x-ratelimit-remaining-tokens"]) < 60
    # a request larger than the whole limit is refused as too large
    st, h, r = chat(server, body("x" * 2000), headers=bearer("d"))
    assert st == 429 and "too large" in r["error"]["message"]


def test_server_refusal_after_admission_keeps_no_tokens(server):
    # the tenant's limits admit a request (reserving ~ body/4 + max_tokens
    # tokens), then the server refuses it (503 overloaded: its first token
    # cannot come within 1 ms). Nothing was generated: nothing stays charged,
    # so four such refusals (~3,600 tokens reserved in all) never turn into a
    # 429 on a tpm of 3,000
    warm = body("Count to twenty.", max_tokens=24, ignore_eos=True)
    assert chat(server, warm, headers=bearer("h"))[0] == 200  # the engine's costs measured
    big = body("Describe the sea in detail. " * 72, max_tokens=400)  # ~2,000 bytes
    hdr = dict(bearer("h"), **{"X-First-Token-Timeout-Ms": "1", "Cache-Control": "no-store"})
    for i in range(4):
        st, h, r = chat(server, big, headers=hdr)
        assert st == 503 and r["error"]["code"] == "overloaded", (i, st, r)
    st, h, r = chat(server, body("Name a fish."), headers=bearer("h"))
    assert st == 200, r
    assert int(h["x-ratelimit-remaining-tokens"]) > 2000, h


def test_admin_tenant_purges_one_tenant_and_tenants_only_their_own(server):
    ask(server, "x", "Name a lake.")
    assert ask(server, "x", "Name a lake.")[1]["x-cache"] == "HIT"
    ask(server, "a", "Name a lake.")
    # a tenant purges its own default namespace, not another's
    st, _, raw = request(server, "DELETE", "/v1/cache?namespace=", headers=bearer("x"))
    assert st == 200, raw
    assert ask(server, "x", "Name a lake.")[1]["x-cache"] == "MISS"
    assert ask(server, "a", "Name a lake.")[1]["x-cache"] == "HIT"
    assert request(server, "DELETE", "/v1/cache?tenant=team-a&namespace=",
                   headers=bearer("x"))[0] == 403
    assert request(server, "DELETE", "/v1/cache?all=true", headers=bearer("x"))[0] == 403
    assert request(server, "GET", "/v1/cache/stats", headers=bearer("x"))[0] == 403
    # an admin tenant names the tenant
    st, _, raw = request(server, "DELETE", "/v1/cache?tenant=team-a&namespace=",
                         headers=bearer("adm"))
    assert st == 200 and json.loads(raw)["l1_deleted"] >= 1
    assert ask(server, "a", "Name a lake.")[1]["x-cache"] == "MISS"


ENTRY_KEYS = "barista:" + "?" * 16 + ":*"  # cache entries in Redis: prefix:ns:key


def test_embeddings_are_rate_limited_like_generations(server):
    # rpm: the third embeddings call in a minute is a 429 with the headers
    ce = client(server, "e")
    for i in range(2):
        raw = ce.embeddings.with_raw_response.create(model="default", input=f"a cat, {i}")
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(1 - i)
        assert len(raw.parse().data[0].embedding) == 384
    with pytest.raises(openai.RateLimitError) as ei:
        ce.embeddings.create(model="default", input="a cat, 2")
    r = ei.value.response
    assert r.headers["x-ratelimit-limit-requests"] == "2"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(r.headers["retry-after"]) >= 1
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
    # a bad request of a limited tenant carries the headers too
    st, h, r = chat(server, {"model": "default", "input": []}, headers=bearer("e"),
                    path="/v1/embeddings")
    assert st == 400 and h["x-ratelimit-remaining-requests"] == "0", r
    # tpm counts the input tokens: reserved as bytes / 4 at admission,
    # corrected to what the model read when it answers
    cf = client(server, "f")
    text = "the quick brown fox jumps over the lazy dog " * 25  # 1,100 bytes: 275 reserved
    raw = cf.embeddings.with_raw_response.create(model="default", input=text)
    used = raw.parse().usage.prompt_tokens
    assert 150 < used <= 256
    assert raw.headers["x-ratelimit-limit-tokens"] == "300"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 300 - 250
    with pytest.raises(openai.RateLimitError) as ei:
        cf.embeddings.create(model="default", input=text)
    assert ei.value.response.json()["error"]["type"] == "tokens"
    # the reservation was corrected to the real count: a small input now sees
    # at least 300 - used - its own tokens left
    raw = cf.embeddings.with_raw_response.create(model="default", input="a dog")
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) >= 300 - used - 2


def sub_ns(name, sub):
    return {**bearer(name), **({"X-Cache-Namespace": sub} if sub else {})}


def test_tenant_purge_covers_every_sub_namespace(server):
    # issue 16 defect 5: a tenant's purge reaches all its sub-namespaces
    q = body("Name a sea.")
    for who in ("a", "x"):
        for sub in (None, "X", "Y"):
            chat(server, q, headers=sub_ns(who, sub))
            assert chat(server, q, headers=sub_ns(who, sub))[1]["x-cache"] == "HIT"
    # a tenant's key with no parameter: all of its own namespaces, no one else's
    st, _, raw = request(server, "DELETE", "/v1/cache", headers=bearer("a"))
    r = json.loads(raw)
    assert st == 200 and r["scope"] == "tenant" and r["l1_deleted"] >= 3, raw
    for sub in (None, "X", "Y"):
        assert chat(server, q, headers=sub_ns("a", sub))[1]["x-cache"] == "MISS", sub
        assert chat(server, q, headers=sub_ns("x", sub))[1]["x-cache"] == "HIT", sub
    # an admin: ?tenant=T (or ?api_key=K) without a namespace is the whole tenant
    st, _, raw = request(server, "DELETE", "/v1/cache?api_key=" + KEYS["x"],
                         headers=bearer("adm"))
    assert st == 200 and json.loads(raw)["scope"] == "tenant", raw
    for sub in (None, "X", "Y"):
        assert chat(server, q, headers=sub_ns("x", sub))[1]["x-cache"] == "MISS", sub
        assert chat(server, q, headers=sub_ns("a", sub))[1]["x-cache"] == "HIT", sub
    st, _, raw = request(server, "DELETE", "/v1/cache?tenant=team-a", headers=bearer("adm"))
    assert st == 200 and json.loads(raw)["l1_deleted"] >= 3, raw
    assert chat(server, q, headers=sub_ns("a", "Y"))[1]["x-cache"] == "MISS"
    # an admin still says what it purges: a bare DELETE is not everything
    assert request(server, "DELETE", "/v1/cache", headers=bearer("adm"))[0] == 400


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_tenant_purge_reaches_redis_and_a_second_replica(barista_bin, gguf_path, tmp_path):
    import redis as redis_py
    redis = Redis()
    p = tmp_path / "keys.yaml"
    p.write_text(keys_yaml())
    args = ["--keys", str(p), "--redis", redis.url, "--redis-timeout-ms", str(int(200 * SLOW))]
    r1 = Server(barista_bin, gguf_path, args=args)
    r2 = Server(barista_bin, gguf_path, args=args)
    rc = redis_py.Redis(port=redis.port)

    def l1_entries(s):
        st, _, raw = request(s, "GET", "/v1/cache/stats", headers=bearer("adm"))
        assert st == 200
        return json.loads(raw)

    try:
        q = body("Name a gulf.")
        for who, sub in (("a", "X"), ("a", "Y"), ("x", "X")):
            assert chat(r1, q, headers=sub_ns(who, sub))[1]["x-cache"] == "MISS"
            # r2 reads it from Redis, then holds it in its own L1
            wait_for(lambda: chat(r2, q, headers=sub_ns(who, sub))[1]["x-cache"] == "HIT",
                     timeout=10 * SLOW)
            assert chat(r2, q, headers=sub_ns(who, sub))[1]["x-cache-tier"] == "L1"
        assert len(rc.keys(ENTRY_KEYS)) == 3
        assert l1_entries(r2)["entries"] == 3
        peer0 = l1_entries(r2)["l2"]["peer_purges"]
        st, _, raw = request(r1, "DELETE", "/v1/cache", headers=bearer("a"))
        r = json.loads(raw)
        assert st == 200 and r["scope"] == "tenant" and r["l1_deleted"] == 2, raw
        assert r["l2"] == "ok" and r["l2_deleted"] == 2, raw
        assert len(rc.keys(ENTRY_KEYS)) == 1  # team-x's entry stays in Redis
        # r2's L1 purges through pub/sub (or the purge log)
        assert wait_for(lambda: l1_entries(r2)["l2"]["peer_purges"] > peer0, timeout=10 * SLOW)
        assert l1_entries(r2)["entries"] == 1
        assert chat(r2, q, headers=sub_ns("a", "X"))[1]["x-cache"] == "MISS"
        assert chat(r1, q, headers=sub_ns("a", "Y"))[1]["x-cache"] == "MISS"
        assert chat(r2, q, headers=sub_ns("x", "X"))[1]["x-cache-tier"] == "L1"
        assert chat(r1, q, headers=sub_ns("x", "X"))[1]["x-cache"] == "HIT"
        # embeddings share the tenant's rpm across replicas (the Redis check)
        for i, s in enumerate((r1, r2)):
            st, h, _ = chat(s, {"model": "default", "input": f"a cat, {i}"},
                            headers=bearer("e"), path="/v1/embeddings")
            assert st == 200 and h["x-ratelimit-remaining-requests"] == str(1 - i)
        st, h, r = chat(r1, {"model": "default", "input": "a cat, 2"}, headers=bearer("e"),
                        path="/v1/embeddings")
        assert st == 429 and r["error"]["code"] == "rate_limit_exceeded", r
        assert metrics(r1)["barista_ratelimit_redis_checks_total"] >= 2
        # purging everything leaves the namespace secret in Redis (it used to
        # match prefix:* and go, splitting replicas started after it)
        assert request(r1, "DELETE", "/v1/cache?all=true", headers=bearer("adm"))[0] == 200
        assert rc.keys(ENTRY_KEYS) == [] and rc.exists("barista:tenant:ns-secret") == 1
    finally:
        assert r1.stop() == 0
        assert r2.stop() == 0
        redis.stop()


def test_sighup_reloads_keys_without_dropping_connections(server, keyfile):
    conn = server.connect()
    data = json.dumps(body("Name a fruit.")).encode()

    def post(key):
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + key.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(data)).encode() + b"\r\n\r\n" + data)
        return conn.recv_response(60)

    try:
        assert post(KEYS["a"])[0] == 200
        assert request(server, "GET", "/v1/models", headers=bearer("g"))[0] == 401
        keyfile.write_text(keys_yaml(f"  - {{key_sha256: {sha(KEYS['g'])}, tenant: team-g}}\n"))
        n = server.log.count("keys file")
        server.signal(signal.SIGHUP)
        wait_for(lambda: server.log.count("keys file") > n, timeout=10 * SLOW)
        assert "reloaded" in server.log.splitlines()[-1] or "reloaded" in server.log
        assert request(server, "GET", "/v1/models", headers=bearer("g"))[0] == 200
        assert post(KEYS["a"])[0] == 200  # the connection opened before the reload
        # a broken file keeps the old keys, with one line in the log
        keyfile.write_text("keys:\n  - {tenant: broken}\n")
        n = server.log.count("keys file")
        server.signal(signal.SIGHUP)
        wait_for(lambda: server.log.count("keys file") > n, timeout=10 * SLOW)
        assert "not reloaded" in server.log and "key_sha256" in server.log
        assert request(server, "GET", "/v1/models", headers=bearer("g"))[0] == 200
        assert post(KEYS["a"])[0] == 200
    finally:
        conn.close()
        keyfile.write_text(keys_yaml())


def test_open_server_long_tokens_sharing_a_prefix_are_apart(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path)
    try:
        common = "eyJhbGciOiJIUzI1NiJ9." + "x" * 600
        t1, t2 = common + ".sig-one", common + ".sig-two"
        b = body("Name a planet.")
        assert chat(s, b, headers={"Authorization": "Bearer " + t1})[1]["x-cache"] == "MISS"
        assert chat(s, b, headers={"Authorization": "Bearer " + t1})[1]["x-cache"] == "HIT"
        assert chat(s, b, headers={"Authorization": "Bearer " + t2})[1]["x-cache"] == "MISS"
        # an api-key header is a tenant too, not the anonymous namespace
        assert chat(s, b)[1]["x-cache"] == "MISS"
        assert chat(s, b, headers={"api-key": t1})[1]["x-cache"] == "HIT"
        assert chat(s, b, headers={"api-key": "other"})[1]["x-cache"] == "MISS"
    finally:
        assert s.stop() == 0


def test_keys_add_prints_a_key_that_works(barista_bin):
    out = subprocess.run([barista_bin, "keys", "add", "team-z"], capture_output=True, text=True,
                         check=True).stdout
    key = out.split("key: ")[1].split()[0]
    assert key.startswith("sk-bar-") and len(key) == 7 + 64
    assert sha(key) in out and "tenant: team-z" in out
    again = subprocess.run([barista_bin, "keys", "add", "team-z"], capture_output=True,
                           text=True, check=True).stdout
    assert again.split("key: ")[1].split()[0] != key
    assert subprocess.run([barista_bin, "keys", "add", "bad name!"],
                          capture_output=True).returncode == 2


def test_bad_keys_file_is_a_startup_error(barista_bin, gguf_path, tmp_path):
    p = tmp_path / "k.yaml"
    p.write_text("keys:\n  - {key_sha256: abc, tenant: t}\n")
    r = subprocess.run([barista_bin, "serve", "--port", "0", "-m", gguf_path, "--keys", str(p)],
                       capture_output=True, text=True, timeout=60 * SLOW)
    assert r.returncode != 0 and "key_sha256" in r.stderr and ":2:" in r.stderr


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_two_replicas_hold_one_limit_through_redis(barista_bin, gguf_path, tmp_path):
    redis = Redis()
    p = tmp_path / "keys.yaml"
    p.write_text(keys_yaml(f"  - {{key_sha256: {sha(KEYS['g'])}, tenant: team-g, rpm: 6}}\n"
                           f"  - {{key_sha256: {sha(KEYS['t'])}, tenant: team-t, tpm: 400}}\n"))
    args = ["--keys", str(p), "--redis", redis.url, "--redis-timeout-ms", "200",
            "--ratelimit-wait-ms", str(int(200 * SLOW))]
    r1 = Server(barista_bin, gguf_path, args=args)
    r2 = Server(barista_bin, gguf_path, args=args)
    try:
        # the namespace secret is shared through Redis: one tenant, one namespace
        assert chat(r1, body("Name a moon."), headers=bearer("a"))[1]["x-cache"] == "MISS"
        wait_for(lambda: chat(r2, body("Name a moon."), headers=bearer("a"))[1]["x-cache"]
                 == "HIT", timeout=10 * SLOW)
        # rpm 6 across both replicas: hits are cheap and count as requests
        codes = [chat(r, body("Name a moon."), headers=bearer("g"))[0]
                 for r in [r1, r2] * 6]
        assert codes.count(200) in (6, 7), codes  # 7: one refilled during the run
        assert set(codes) <= {200, 429}
        assert codes[-1] == 429
        # tokens reserved at admission are corrected in Redis when a request
        # ends: a big max_tokens cut short by a stop string gives most back
        short = body("Say yes.", max_tokens=300, stop=[" ", ".", "\n"])
        st, h, r = chat(r1, short, headers={**bearer("t"), "Cache-Control": "no-store"})
        assert st == 200 and r["usage"]["total_tokens"] < 100, r
        assert int(h["x-ratelimit-remaining-tokens"]) < 100  # ~330 reserved
        st, h, r = chat(r1, body("Say no.", max_tokens=150),
                        headers={**bearer("t"), "Cache-Control": "no-store"})
        assert st == 200, r  # without the correction: ~60 left, this needs ~185
        assert int(h["x-ratelimit-remaining-tokens"]) > 100
        m = metrics(r1)
        assert m["barista_ratelimit_redis_up"] == 1
        assert m["barista_ratelimit_redis_checks_total"] >= 6
        # Redis frozen (SIGSTOP: connections stay open, nothing answers): each
        # check waits --ratelimit-wait-ms, then r1's own limiter decides
        # (team-g's bucket in Redis is empty, r1's own is full); back on SIGCONT
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            frozen = [chat(r1, body("Name a moon."), headers=bearer("g"))[0] for _ in range(7)]
            assert frozen == [200] * 6 + [429], frozen
            assert time.monotonic() - t0 < 30 * SLOW
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        assert metrics(r1)["barista_ratelimit_redis_timeouts_total"] >= 1
        wait_for(lambda: metrics(r1)["barista_ratelimit_redis_up"] == 1, timeout=10 * SLOW)
        m0 = metrics(r1)
        chat(r1, body("Name a moon."), headers=bearer("g"))  # decided by Redis again
        m1 = metrics(r1)
        assert m1["barista_ratelimit_redis_checks_total"] > m0["barista_ratelimit_redis_checks_total"]
        assert (m1["barista_ratelimit_local_decisions_total"]
                == m0["barista_ratelimit_local_decisions_total"])
        # Redis gone: each replica's own limiter decides, so a tenant gets at
        # most N_replicas x its limit (docs/TENANTS.md) and is still refused
        redis.stop()
        per = [[chat(r, body("Name a comet."), headers=bearer("c"))[0] for _ in range(4)]
               for r in (r1, r2)]
        assert per == [[200, 200, 200, 429]] * 2, per
        assert metrics(r1)["barista_ratelimit_local_decisions_total"] >= 4
    finally:
        assert r1.stop() == 0
        assert r2.stop() == 0
        redis.stop()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_two_replicas_share_one_concurrency_cap_through_redis(barista_bin, gguf_path, tmp_path):
    """max_concurrency 2 across two replicas sharing Redis: two long requests
    on r1 fill it, so r2 refuses a third with 429 (each replica alone would
    admit it); a lease outlives its 10 s expiry while its request runs (r1
    renews it); once r1 is SIGKILLed its leases expire and r2 admits again."""
    rs = Redis()
    p = tmp_path / "keys.yaml"
    p.write_text(keys_yaml(f"  - {{key_sha256: {sha(KEYS['m'])}, tenant: team-m, "
                           f"max_concurrency: 2}}\n"))
    args = ["--keys", str(p), "--redis", rs.url, "--redis-timeout-ms", "200",
            "--ratelimit-wait-ms", str(int(1000 * SLOW)), "--parallel", "2"]
    r1 = Server(barista_bin, gguf_path, args=args)
    r2 = Server(barista_bin, gguf_path, args=args)
    rc = redis_py.Redis(port=rs.port)
    leases = "barista:rl:{team-m}:conc"
    h = {**bearer("m"), "Cache-Control": "no-store"}
    try:
        # a request that ends gives its lease back at once (not after 10 s)
        assert chat(r2, body("Say hi."), headers=h)[0] == 200
        assert wait_for(lambda: rc.zcard(leases) == 0, timeout=2)
        def run(i):  # two different prompts: two generations, not one shared
            try:
                chat(r1, body(f"Tell a very long story, number {i}.", max_tokens=1500,
                              ignore_eos=True), headers=h)
            except OSError:
                pass  # r1 is killed under it
        ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        assert wait_for(lambda: rc.zcard(leases) == 2, timeout=10)
        st, hd, r = chat(r2, body("Name a moon."), headers=h)
        assert st == 429, r
        assert r["error"]["code"] == "rate_limit_exceeded" and "in flight" in r["error"]["message"]
        assert int(hd["retry-after"]) >= 1
        # past a lease's 10 s life the requests still run, their leases renewed
        time.sleep(max(0.0, 11.5 - (time.monotonic() - t0)))
        assert metrics(r1)["barista_engine_active_sequences"] == 2, "the long requests ended"
        assert rc.zcard(leases) == 2
        assert chat(r2, body("Name a comet."), headers=h)[0] == 429
        # r1 dies without ending them: its leases expire, r2 admits again
        r1.signal(signal.SIGKILL)
        r1.wait()
        t1 = time.monotonic()
        assert wait_for(lambda: chat(r2, body("Name a star."), headers=h)[0] == 200,
                        timeout=20, interval=0.5)
        assert time.monotonic() - t1 < 12 * SLOW
    finally:
        r1.kill()
        assert r2.stop() == 0
        rs.stop()
