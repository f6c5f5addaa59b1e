"""The semantic cache tier end to end: the real SmolLM2 answers, the real
all-MiniLM-L6-v2 embeds (barista's own encoder), a real redis-server for the
shared tier. Paraphrase hits with their headers, near-miss refusals by the
guard, multi-turn partitioning, tenant namespaces, streamed replay, the
per-request controls, purges, two servers sharing one Redis, and Redis death.

The similarities these questions have (cosine, all-MiniLM-L6-v2, from the
numpy reference in bench/semantic/embed_ref.py): "How do I reset my
password?" / "How can I reset my password?" 0.992; "Is it safe to eat raw
eggs?" / "Is it not safe to eat raw eggs?" 0.993 (cosine alone would serve
it: the guard refuses the negation)."""
import json
import shutil

import pytest

from serverutil import Redis, Server, chat, metrics, request, sse_text, wait_for

EMB = "all-MiniLM-L6-v2"
ADMIN = {"Authorization": "Bearer adm-secret"}
Q = "How do I reset my password?"
P = "How can I reset my password?"


def body(text, **kw):
    b = {"model": "default", "messages": [{"role": "user", "content": text}],
         "temperature": 0, "max_tokens": 6}
    b.update(kw)
    return b


def content(r):
    return r["choices"][0]["message"]["content"]


def start(barista_bin, gguf_path, models_dir, extra=()):
    s = Server(barista_bin, gguf_path,
               args=["--embedding-model", str(models_dir / EMB), "--semantic-cache",
                     "--admin-key", "adm-secret"] + list(extra))
    # the embedding backend loads after /ready in some builds: wait for it
    probe = {}

    def answered():
        probe["st"] = request(s, "POST", "/v1/embeddings",
                              json.dumps({"model": EMB, "input": "x"}))[0]
        return probe["st"] != 503  # 503: still loading
    wait_for(answered, timeout=30)
    if probe.get("st") != 200:
        s.stop()
        pytest.skip("this build serves no embedding model (the BERT backend is missing)")
    return s


def stats(s):
    st, _, raw = request(s, "GET", "/v1/cache/stats", headers=ADMIN)
    assert st == 200
    return json.loads(raw)


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path, models_dir):
    s = start(barista_bin, gguf_path, models_dir)
    yield s
    s.stop()


def test_paraphrase_hit_headers_and_replay(server):
    st, h, a = chat(server, body(Q))
    assert st == 200 and h["x-cache"] == "MISS"
    st, h, b = chat(server, body(P))
    assert st == 200 and h["x-cache"] == "HIT" and h["x-cache-tier"] == "semantic"
    sim = h["x-cache-similarity"]
    assert len(sim.split(".")[1]) == 3 and 0.95 <= float(sim) <= 1.0
    assert h["x-cache-key"] != ""  # the served entry's key: the purge handle
    assert content(b) == content(a) and b["usage"] == a["usage"]
    # streamed: the cached answer replayed as SSE
    st, h, ev = chat(server, body(P, stream=True))
    assert h["x-cache-tier"] == "semantic" and ev[-1] == "[DONE]"
    assert sse_text(ev) == content(a)
    m = metrics(server)
    assert m['barista_cache_requests_total{result="hit",tier="semantic"}'] >= 2


def test_controls(server):
    q, p = "How do I sort a list in Python?", "How can I sort a list in Python?"  # 0.997
    assert chat(server, body(q))[1]["x-cache"] == "MISS"
    # off: not looked up
    assert chat(server, body(p), headers={"X-Semantic-Cache": "off"})[1]["x-cache"] == "MISS"
    # the exact repeat of that request is an exact hit, not semantic
    st, h, _ = chat(server, body(p), headers={"X-Semantic-Cache": "off"})
    assert h["x-cache-tier"] == "L1"
    p2 = "How could I sort a list in Python?"
    # a stricter threshold than the pair has: miss; a laxer one is ignored
    st, h, _ = chat(server, body(p2), headers={"X-Semantic-Cache": "min-similarity=1"})
    assert h["x-cache"] == "MISS"
    p3 = "how can i sort a list in python"
    st, h, _ = chat(server, body(p3), headers={"X-Semantic-Cache": "min-similarity=0.1"})
    assert h["x-cache"] == "HIT" and float(h["x-cache-similarity"]) >= 0.95
    for bad in ("min-similarity=2", "min-similarity=x", "sometimes"):
        st, _, err = chat(server, body(p3), headers={"X-Semantic-Cache": bad})
        assert st == 400 and "X-Semantic-Cache" in err["error"]["message"]
    # no-store: nothing stored, so its paraphrase misses
    q4, p4 = "Tell me a joke about cats.", "Tell me a joke about cats please."  # 0.982
    assert chat(server, body(q4), headers={"Cache-Control": "no-store"})[1]["x-cache"] == "MISS"
    assert chat(server, body(p4))[1]["x-cache"] == "MISS"
    # sampled requests are not cacheable: BYPASS, never semantic
    st, h, _ = chat(server, body(P, temperature=0.8))
    assert h["x-cache"] == "BYPASS"


def test_near_miss_refused_by_guard(server):
    before = stats(server)["semantic"]["guard_refusals"]["negation"]
    assert chat(server, body("Is it safe to eat raw eggs?"))[1]["x-cache"] == "MISS"
    st, h, _ = chat(server, body("Is it not safe to eat raw eggs?"))
    assert st == 200 and h["x-cache"] == "MISS"
    assert stats(server)["semantic"]["guard_refusals"]["negation"] == before + 1
    assert chat(server, body("How to boil an egg in 4 minutes?"))[1]["x-cache"] == "MISS"
    assert chat(server, body("How to boil an egg in 10 minutes?"))[1]["x-cache"] == "MISS"


def test_multi_turn_partitioning(server):
    def conv(topic, follow):
        return body(None, messages=[
            {"role": "user", "content": f"Tell me about {topic}."},
            {"role": "assistant", "content": f"{topic} is a programming language."},
            {"role": "user", "content": follow}])
    st, h, rust = chat(server, conv("Rust", "And how do I write a loop in it?"))
    assert h["x-cache"] == "MISS"
    # the same follow-up, and a paraphrase of it, in another conversation: never
    st, h, _ = chat(server, conv("Go", "And how can I write a loop in it?"))
    assert h["x-cache"] == "MISS"
    st, h, _ = chat(server, body(None, messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Tell me about Rust."},
        {"role": "assistant", "content": "Rust is a programming language."},
        {"role": "user", "content": "And how can I write a loop in it?"}]))
    assert h["x-cache"] == "MISS"  # another system prompt
    # in the same conversation the paraphrase hits, with that conversation's answer
    st, h, r = chat(server, conv("Rust", "And how can I write a loop in it?"))
    assert h["x-cache"] == "HIT" and h["x-cache-tier"] == "semantic"
    assert content(r) == content(rust)
    # other sampling values are another partition
    st, h, _ = chat(server, body(P, max_tokens=5))
    assert h["x-cache"] == "MISS"


def test_namespaces_and_purge(server):
    a, b = {"X-Cache-Namespace": "tenant-a"}, {"X-Cache-Namespace": "tenant-b"}
    q, p = "What is the capital of France?", "What's the capital of France?"  # 0.994
    assert chat(server, body(q), headers=a)[1]["x-cache"] == "MISS"
    assert chat(server, body(p), headers=b)[1]["x-cache"] == "MISS"  # never across tenants
    st, h, _ = chat(server, body(p), headers=a)
    assert h["x-cache"] == "HIT" and h["x-cache-tier"] == "semantic"
    # purge tenant a's namespace: its semantic entries go too
    st, _, raw = request(server, "DELETE", "/v1/cache?namespace=tenant-a", headers=ADMIN)
    assert st == 200
    p2 = "what is the capital of France"
    assert chat(server, body(p2), headers=a)[1]["x-cache"] == "MISS"
    # purge by key: the key a semantic hit names (p2's entry)
    st, h, _ = chat(server, body("what's the capital of France"), headers=a)
    assert h["x-cache"] == "HIT" and h["x-cache-tier"] == "semantic"
    st, _, _ = request(server, "DELETE", "/v1/cache/" + h["x-cache-key"], headers=ADMIN)
    assert st == 200
    st, h, _ = chat(server, body("What is the capital of France ?"), headers=a)
    assert h["x-cache"] == "MISS"
    # purge all
    assert request(server, "DELETE", "/v1/cache?all=true", headers=ADMIN)[0] == 200
    assert stats(server)["semantic"]["entries"] == 0


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_two_servers_share_one_redis_and_survive_its_death(barista_bin, gguf_path, models_dir):
    r = Redis()
    args = ["--redis", r.url, "--redis-timeout-ms", "200"]
    a = start(barista_bin, gguf_path, models_dir, args)
    b = start(barista_bin, gguf_path, models_dir, args)
    try:
        assert wait_for(lambda: stats(a)["l2"]["connected"] and stats(b)["l2"]["connected"], 10)
        st, h, ra = chat(a, body(Q))
        assert h["x-cache"] == "MISS"
        # b learns the entry from the stream, and reads the reply from Redis
        assert wait_for(lambda: stats(b)["semantic"]["entries"] >= 1, timeout=5)
        st, h, rb = chat(b, body(P))
        assert h["x-cache"] == "HIT" and h["x-cache-tier"] == "semantic"
        assert content(rb) == content(ra)
        # a purge on a removes the semantic entries on both
        st, _, _ = request(a, "DELETE", "/v1/cache?all=true", headers=ADMIN)
        assert st == 200
        assert wait_for(lambda: stats(b)["semantic"]["entries"] == 0, timeout=5)
        assert chat(b, body("how can I reset my password"))[1]["x-cache"] == "MISS"
        # a third server started now loads what the stream holds
        c = start(barista_bin, gguf_path, models_dir, args)
        try:
            assert wait_for(lambda: stats(c)["semantic"]["entries"] >= 1, timeout=5)
        finally:
            c.stop()
        # Redis killed: every request still succeeds (local tiers only)
        r.stop()
        for text in (Q, P, "How do I change my password?", "Is the sky blue?"):
            st, h, _ = chat(a, body(text))
            assert st == 200
        st, h, _ = chat(a, body("How could I reset my password?"))
        assert st == 200 and h["x-cache"] in ("HIT", "MISS")
    finally:
        a.stop()
        b.stop()
        r.stop()
