"""The response cache's Redis L2 end to end: a real redis-server started here
on a free port, two barista processes sharing it, an L2-only barista, and
Redis killed and restarted while requests keep coming."""
import json
import shutil

import time

import pytest

from serverutil import SLOW, Redis, Server, chat, metrics, request, sse_text, wait_for

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server not installed (scripts/deps.sh)")

ADMIN = {"Authorization": "Bearer adm-secret"}


def body(text, **kw):
    b = {"model": "default", "messages": [{"role": "user", "content": text}],
         "temperature": 0, "max_tokens": 6}
    b.update(kw)
    return b


def stats(s):
    st, _, raw = request(s, "GET", "/v1/cache/stats", headers=ADMIN)
    assert st == 200
    return json.loads(raw)


@pytest.fixture(scope="module")
def redis():
    r = Redis()
    yield r
    r.stop()


def connected(s):
    return stats(s)["l2"]["connected"]


def test_two_servers_share_one_redis(barista_bin, gguf_path, redis):
    args = ["--redis", redis.url, "--redis-timeout-ms", "200", "--admin-key", "adm-secret"]
    a = Server(barista_bin, gguf_path, args=args)
    b = Server(barista_bin, gguf_path, args=args)
    try:
        assert wait_for(lambda: connected(a) and connected(b), timeout=10)
        q = body("Name a fish.")
        st, h, ra = chat(a, q)
        assert st == 200 and h["x-cache"] == "MISS"
        wait_for(lambda: stats(a)["l2"]["sets"] >= 1, timeout=5)
        st, h, rb = chat(b, q)
        assert h["x-cache"] == "HIT" and h["x-cache-tier"] == "L2"
        assert rb["choices"][0]["message"]["content"] == ra["choices"][0]["message"]["content"]
        st, h, _ = chat(b, q)
        assert h["x-cache"] == "HIT" and h["x-cache-tier"] == "L1"  # promoted
        tiers = stats(b)["tiers"]  # the tier interface's view, in walk order
        assert [t["name"] for t in tiers] == ["L1", "L2"]
        assert tiers[0]["walk_hits"] == 1 and tiers[1]["walk_hits"] == 1
        assert tiers[0]["entries"] >= 1 and tiers[1]["up"] is True
        # streamed hit from L2 on a server that has not seen it
        st, h, ev = chat(a, dict(body("Name a bird."), stream=True))
        assert h["x-cache"] == "MISS"
        wait_for(lambda: stats(a)["l2"]["sets"] >= 2, timeout=5)
        st, h, ev2 = chat(b, dict(body("Name a bird."), stream=True))
        assert h["x-cache-tier"] == "L2" and ev2[-1] == "[DONE]"
        assert sse_text(ev2) == sse_text(ev) and sse_text(ev)
        # a purge on A reaches B's L1 (pub/sub) and Redis
        key = chat(b, q)[1]["x-cache-key"]
        st, _, raw = request(a, "DELETE", f"/v1/cache/{key}", headers=ADMIN)
        assert st == 200 and json.loads(raw)["l2_deleted"] == 1
        wait_for(lambda: stats(b)["l2"]["peer_purges"] >= 1, timeout=5)
        assert chat(b, q)[1]["x-cache"] == "MISS"
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


def test_settings_that_change_output_are_in_the_key(barista_bin, gguf_path, redis):
    """Review finding (issue 16, defect 8): two replicas sharing Redis but
    with different --max-tokens-default (or context caps) must not serve each
    other's answers, which were cut at another length."""
    base = ["--redis", redis.url, "--redis-timeout-ms", "200", "--admin-key", "adm-secret"]
    a = Server(barista_bin, gguf_path, args=base + ["--max-tokens-default", "3"])
    b = Server(barista_bin, gguf_path, args=base + ["--max-tokens-default", "7"])
    c = Server(barista_bin, gguf_path, args=base + ["--max-tokens-default", "3", "--ctx", "1024"])
    try:
        assert wait_for(lambda: connected(a) and connected(b) and connected(c), timeout=10)
        q = {"model": "default", "messages": [{"role": "user", "content": "Count slowly."}],
             "temperature": 0}
        st, h, ra = chat(a, q)
        assert st == 200 and h["x-cache"] == "MISS"
        assert ra["usage"]["completion_tokens"] <= 3
        wait_for(lambda: stats(a)["l2"]["sets"] >= 1, timeout=5)
        st, h, rb = chat(b, q)
        assert h["x-cache"] == "MISS", "a reply cut at 3 tokens served where the default is 7"
        st, h, _ = chat(c, q)
        assert h["x-cache"] == "MISS", "another context cap shared the entry"
        # same settings still share
        d = Server(barista_bin, gguf_path, args=base + ["--max-tokens-default", "3"])
        try:
            assert wait_for(lambda: connected(d), timeout=10)
            st, h, _ = chat(d, q)
            assert h["x-cache"] == "HIT" and h["x-cache-tier"] == "L2"
        finally:
            assert d.stop() == 0
    finally:
        for s in (a, b, c):
            assert s.stop() == 0


def test_purge_missed_by_subscriber_still_arrives(barista_bin, gguf_path, redis):
    """Review finding (issue 16, defect 3): a purge published while a
    replica's subscriber is away used to be lost (its L1 served the purged
    answer until TTL). Purges are also in a durable log every replica polls,
    so the missed one arrives."""
    import redis as redis_py
    args = ["--redis", redis.url, "--redis-timeout-ms", "200", "--admin-key", "adm-secret"]
    a = Server(barista_bin, gguf_path, args=args)
    b = Server(barista_bin, gguf_path, args=args)
    rc = redis_py.Redis(port=redis.port)
    try:
        assert wait_for(lambda: connected(a) and connected(b), timeout=10)
        q = body("Name a river.")
        st, h, _ = chat(b, q)
        key = h["x-cache-key"]
        assert chat(b, q)[1]["x-cache-tier"] == "L1"
        peer0 = stats(b)["l2"]["peer_purges"]
        rc.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # every subscriber drops
        st, _, raw = request(a, "DELETE", f"/v1/cache/{key}", headers=ADMIN)
        assert st == 200
        # B's subscriber comes back after the message is gone; the log brings it
        assert wait_for(lambda: stats(b)["l2"]["peer_purges"] > peer0, timeout=10)
        assert chat(b, q)[1]["x-cache"] == "MISS"
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


def test_l2_only(barista_bin, gguf_path, redis):
    s = Server(barista_bin, gguf_path, args=["--cache-mem", "0", "--redis", redis.url,
                                             "--redis-timeout-ms", "200",
                                             "--admin-key", "adm-secret"])
    try:
        assert wait_for(lambda: connected(s), timeout=10)
        q = body("Name a gem.")
        assert chat(s, q)[1]["x-cache"] == "MISS"
        wait_for(lambda: stats(s)["l2"]["sets"] >= 1, timeout=5)
        st, h, _ = chat(s, q)
        assert h["x-cache"] == "HIT" and h["x-cache-tier"] == "L2"
        assert stats(s)["entries"] == 0
    finally:
        assert s.stop() == 0


def test_client_max_age_is_capped(barista_bin, gguf_path, redis):
    """Cache-Control: max-age=999999999999 must not pin an entry past
    --cache-max-ttl-s: the Redis key's TTL is at most the cap."""
    import redis as redis_py
    s = Server(barista_bin, gguf_path, args=["--cache-mem", "0", "--redis", redis.url,
                                             "--redis-timeout-ms", "200", "--cache-max-ttl-s",
                                             "120", "--admin-key", "adm-secret"])
    try:
        assert wait_for(lambda: connected(s), timeout=10)
        q = body("Name a tree.")
        st, h, _ = chat(s, q, headers={"Cache-Control": "max-age=999999999999"})
        assert st == 200
        key = h["x-cache-key"]
        wait_for(lambda: stats(s)["l2"]["sets"] >= 1, timeout=5)
        rc = redis_py.Redis(port=redis.port)
        names = [k for k in rc.scan_iter("barista:*") if k.decode().endswith(key)]
        assert names, "no Redis key for " + key
        ttl = rc.ttl(names[0])
        assert 0 < ttl <= 120, ttl
        # a smaller max-age still wins
        st, h, _ = chat(s, body("Name a shrub."), headers={"Cache-Control": "max-age=30"})
        wait_for(lambda: stats(s)["l2"]["sets"] >= 2, timeout=5)
        names = [k for k in rc.scan_iter("barista:*") if k.decode().endswith(h["x-cache-key"])]
        assert 0 < rc.ttl(names[0]) <= 30
    finally:
        assert s.stop() == 0


def test_hung_redis_purge_answers_and_l2_recovers(barista_bin, gguf_path):
    """Review finding (issue 16, defect 2): a SIGSTOPped Redis (the kernel
    still accepts and acknowledges) answers nothing. Requests keep
    succeeding, an admin purge answers within the stall bound and says L2
    failed, and once Redis continues L2 is back in service."""
    import signal
    r = Redis()
    s = Server(barista_bin, gguf_path, args=["--redis", r.url, "--redis-timeout-ms", "50",
                                             "--redis-stall-ms", "500",
                                             "--admin-key", "adm-secret"])
    try:
        assert wait_for(lambda: connected(s), timeout=10)
        r.proc.send_signal(signal.SIGSTOP)
        for i in range(4):  # misses: SETs that are never answered, GETs that time out
            st, h, _ = chat(s, body(f"Name a color {i}."))
            assert st == 200
        t0 = time.time()
        st, _, raw = request(s, "DELETE", "/v1/cache?all=true", headers=ADMIN, timeout=30)
        took = time.time() - t0
        assert st == 200
        assert json.loads(raw)["l2"] in ("failed", "down")
        assert took < 3 * SLOW, took
        assert stats(s)["l2"]["trips"] >= 1
        r.proc.send_signal(signal.SIGCONT)
        assert wait_for(lambda: connected(s), timeout=15)
        sets = stats(s)["l2"]["sets"]
        st, h, _ = chat(s, body("Name a metal."))
        assert st == 200
        assert wait_for(lambda: stats(s)["l2"]["sets"] > sets, timeout=5)
    finally:
        r.proc.send_signal(signal.SIGCONT)
        assert s.stop() == 0
        r.stop()


def test_redis_killed_and_restarted_no_failed_requests(barista_bin, gguf_path):
    r = Redis()
    s = Server(barista_bin, gguf_path, args=["--redis", r.url, "--admin-key", "adm-secret",
                                             "--cache-mem", "0", "--redis-timeout-ms", "200"])
    try:
        assert wait_for(lambda: connected(s), timeout=10)
        statuses = []
        q = body("Name a metal.")
        statuses.append(chat(s, q)[0])
        r.stop()
        for i in range(4):
            st, h, _ = chat(s, body(f"Name a number {i}."))
            statuses.append(st)
            assert h["x-cache"] in ("MISS",)
        r.start()
        assert wait_for(lambda: connected(s), timeout=15)
        sets = stats(s)["l2"]["sets"]
        st, h, _ = chat(s, q)
        statuses.append(st)
        assert h["x-cache"] == "MISS"  # the new Redis is empty
        assert wait_for(lambda: stats(s)["l2"]["sets"] > sets, timeout=10)
        # L2 serves again. A lookup slower than --redis-timeout-ms is a miss by
        # design (a loaded CI box can make one), so allow a few tries.
        hit = False
        for _ in range(10):
            st, h, _ = chat(s, q)
            statuses.append(st)
            if h["x-cache"] == "HIT" and h.get("x-cache-tier") == "L2":
                hit = True
                break
            time.sleep(0.3)
        assert statuses == [200] * len(statuses)
        assert hit
        m = metrics(s)
        errs = sum(v for k, v in m.items() if k.startswith("barista_redis_errors_total"))
        assert errs >= 1
        assert m["barista_redis_connected"] == 1
    finally:
        assert s.stop() == 0
        r.stop()


def test_redis_by_host_name(barista_bin, gguf_path, redis):
    """A host name is resolved off the loop (uv_getaddrinfo) on every
    connection attempt; a name that does not resolve leaves L2 down and the
    server serving."""
    s = Server(barista_bin, gguf_path, args=["--redis", f"redis://localhost:{redis.port}",
                                             "--admin-key", "adm-secret"])
    bad = Server(barista_bin, gguf_path, args=["--redis", "redis://no-such-host.invalid:6379",
                                               "--admin-key", "adm-secret"])
    try:
        assert wait_for(lambda: connected(s), timeout=10)
        assert chat(s, body("Name a lake."))[0] == 200
        assert wait_for(lambda: stats(s)["l2"]["sets"] >= 1, timeout=5)
        st, h, _ = chat(bad, body("Name a sea."))
        assert st == 200
        assert not connected(bad)
        assert stats(bad)["l2"]["conn_failures"] >= 1
    finally:
        assert s.stop() == 0
        assert bad.stop() == 0


def test_bad_redis_url_is_a_startup_error(barista_bin, gguf_path):
    with pytest.raises(RuntimeError):
        Server(barista_bin, gguf_path, args=["--redis", "http://nope"])
