"""The engine's prefix cache end to end (docs/SERVE.md "Prefix cache"): a
repeated system prompt is mapped from the paged KV cache
(usage.prompt_tokens_details.cached_tokens), only within one tenant (the API
key / X-Cache-Namespace) and one cache_salt; a small --kv-mem pre-empts and
resumes sequences without changing their text; bad input gets a 400.

Every request sends Cache-Control: no-cache so the exact response cache never
answers: these are engine runs."""
import concurrent.futures

import openai
import pytest

from serverutil import SLOW, Server, metrics, wait_for

NO_CACHE = {"Cache-Control": "no-cache"}
SYSTEM = ("You are the support assistant of Barista Coffee Roasters. " * 3 +
          "Answer briefly and politely. Our shop opens at seven in the morning and closes "
          "at six in the evening, every day except public holidays. We roast single-origin "
          "beans from Ethiopia, Colombia, Guatemala and Sumatra, and we ship within two "
          "working days. Returns are accepted within thirty days if the bag is unopened. "
          "Never invent prices; if asked, refer the customer to the price list on the website. "
          "Brewing advice: use fifteen grams of coffee for every two hundred and fifty "
          "millilitres of water just off the boil, grind medium-fine for pour-over and coarse "
          "for a French press, and let it steep four minutes. Store beans in an airtight "
          "container away from light and heat, and use them within a month of roasting. ")
GEN = 80  # answer tokens: with a ~42-token prompt, 2 blocks per sequence
BLOCK_BYTES = 1474560  # one 64-position KV block of SmolLM2-135M: 2 x 30 x 64 x 192 x 2 bytes


def client(server, key):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, timeout=60 * SLOW,
                         max_retries=0)


def ask(c, question, salt=None, max_tokens=2):
    extra = {"cache_salt": salt} if salt is not None else None
    r = c.chat.completions.create(
        model="default", temperature=0, max_tokens=max_tokens, extra_headers=NO_CACHE,
        extra_body=extra,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
    return r


def cached(r):
    d = r.usage.prompt_tokens_details
    return d.cached_tokens if d is not None else 0


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--parallel", "4", "--ctx", "1024"])
    yield s
    assert s.stop() == 0


def test_tenants_do_not_share_prefixes(server):
    a, b = client(server, "tenant-a-key"), client(server, "tenant-b-key")
    first = ask(a, "When do you open?")
    assert first.usage.prompt_tokens > 200
    assert cached(first) == 0
    again = ask(a, "Do you ship abroad?")  # same system prompt, same tenant
    assert cached(again) >= 128
    assert cached(again) % 64 == 0  # whole blocks of the shared system prompt
    other = ask(b, "When do you open?")  # tenant A's exact prompt, tenant B
    assert cached(other) == 0
    # the same tenant with a cache_salt is another namespace, and a reused one hits
    salted = ask(a, "When do you open?", salt="conversation-1")
    assert cached(salted) == 0
    assert cached(ask(a, "Where is the bean from?", salt="conversation-1")) >= 128
    # X-Cache-Namespace splits one API key into tenants, as for the response cache
    ns = client(server, "tenant-a-key")
    r = ns.chat.completions.create(
        model="default", temperature=0, max_tokens=2,
        extra_headers={**NO_CACHE, "X-Cache-Namespace": "team-2"},
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}])
    assert cached(r) == 0
    m = metrics(server)
    assert m["barista_prefix_cache_hit_tokens_total"] >= 256
    assert m["barista_kv_blocks_capacity"] == 4 * 16  # --parallel 4 x --ctx 1024 by default
    assert m["barista_kv_blocks_cached"] >= 2
    assert m["barista_kv_blocks_used"] + m["barista_kv_blocks_cached"] + \
        m["barista_kv_blocks_free"] == m["barista_kv_blocks_capacity"]


def test_cached_prefix_gives_the_same_answer(server):
    c = client(server, "tenant-c-key")
    q = "What do you roast?"
    cold = ask(c, q, max_tokens=12)
    warm = ask(c, q, max_tokens=12)
    assert cached(cold) == 0 and cached(warm) > 0
    assert warm.choices[0].message.content == cold.choices[0].message.content


def test_bad_cache_salt(server):
    c = client(server, "k")
    with pytest.raises(openai.BadRequestError) as e:
        ask(c, "Hi", salt="x" * 257)
    assert e.value.body["param"] == "cache_salt"
    assert "256" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        ask(c, "Hi", salt=5)
    assert e.value.body["param"] == "cache_salt"
    assert cached(ask(c, "Hi", salt="y" * 256)) == 0  # the limit itself is fine


def test_small_kv_mem_preempts_and_limits_prompts(barista_bin, gguf_path, server):
    """2 blocks (128 positions) for 2 sequences of ~120 positions each: one
    is pre-empted and resumed, both run to their length.
    A prompt the pool can never hold is a 400 naming the limit."""
    small = Server(barista_bin, gguf_path,
                   args=["--parallel", "2", "--kv-mem", str(2 * BLOCK_BYTES)])
    try:
        prompts = ["Write a long story about a dragon who loves coffee.",
                   "List every planet in the solar system and describe each one."]

        def run(srv, p):
            c = client(srv, "k")
            c = c.with_options(timeout=180 * SLOW)  # a loaded CI machine
            r = c.chat.completions.create(
                model="default", temperature=0, max_tokens=GEN, extra_headers=NO_CACHE,
                extra_body={"ignore_eos": True}, messages=[{"role": "user", "content": p}])
            return r.choices[0].message.content, r.usage.completion_tokens

        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            want = list(ex.map(lambda p: run(server, p), prompts))
            got = list(ex.map(lambda p: run(small, p), prompts))
        assert [g[1] for g in got] == [GEN, GEN]
        # the sequence never pre-empted answers exactly as unpressured; the
        # pre-empted one kept what it had emitted (> 15 tokens), and its
        # positions recomputed inside its last block may change later tokens
        # (docs/ARCHITECTURE.md "Pre-emption")
        assert got[0] == want[0] or got[1] == want[1]
        for (g, _), (w, _) in zip(got, want):
            assert g[:40] == w[:40]
        assert wait_for(lambda: metrics(small)["barista_preemptions_total"] >= 1)

        c = client(small, "k")
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model="default", max_tokens=4, extra_headers=NO_CACHE,
                                      messages=[{"role": "user", "content": SYSTEM * 2}])
        msg = e.value.body["message"]
        assert "kv-mem" in msg and "128" in msg
        assert small.proc.poll() is None
    finally:
        assert small.stop() == 0
