"""The generation path's feature cache (docs/CACHE.md "Feature cache"): a
prompt that comes again is not tokenized again — /metrics counts it as
barista_feature_cache_hits_total{cache="tokens"} — and the answer is the
same as without the cache (compared with a server started with
--token-cache-bytes 0). Chat and completions; a different conversation or
prompt is a miss.

Every request sends Cache-Control: no-cache so the exact response cache never
answers: these are engine runs."""
import openai
import pytest

from serverutil import SLOW, Server, metrics

NO_CACHE = {"Cache-Control": "no-cache"}
HITS = 'barista_feature_cache_hits_total{cache="tokens"}'
MISSES = 'barista_feature_cache_misses_total{cache="tokens"}'
ENTRIES = 'barista_feature_cache_entries{cache="tokens"}'


@pytest.fixture(scope="module")
def servers(barista_bin, gguf_path):
    on = Server(barista_bin, gguf_path, args=["--embedding-model", "none"])
    off = Server(barista_bin, gguf_path,
                 args=["--embedding-model", "none", "--token-cache-bytes", "0"])
    yield on, off
    assert on.stop() == 0
    assert off.stop() == 0


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="k", timeout=60 * SLOW,
                         max_retries=0)


def chat(server, messages):
    r = client(server).chat.completions.create(
        model="default", temperature=0, max_tokens=12, extra_headers=NO_CACHE,
        messages=messages)
    return r.choices[0].message.content, r.usage.prompt_tokens


def complete(server, prompt):
    r = client(server).completions.create(model="default", temperature=0, max_tokens=12,
                                          extra_headers=NO_CACHE, prompt=prompt)
    return r.choices[0].text, r.usage.prompt_tokens


def counts(server):
    m = metrics(server)
    return m[HITS], m[MISSES], m[ENTRIES]


def test_repeat_hits_and_output_is_unchanged(servers):
    on, off = servers
    conv = [{"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Name three primary colours."}]
    h0, m0, _ = counts(on)
    first = chat(on, conv)
    h1, m1, e1 = counts(on)
    assert (h1 - h0, m1 - m0) == (0, 1)  # tokenized once ...
    assert e1 >= 1
    again = chat(on, conv)
    h2, m2, _ = counts(on)
    assert (h2 - h1, m2 - m1) == (1, 0)  # ... and then taken from the cache
    assert again == first  # same text, same prompt_tokens
    assert chat(off, conv) == first  # and the same as without any cache
    # another conversation (one word differs, or one more turn) is a miss
    other = [conv[0], {"role": "user", "content": "Name three secondary colours."}]
    chat(on, other)
    longer = conv + [{"role": "assistant", "content": first[0]},
                     {"role": "user", "content": "And three more?"}]
    chat(on, longer)
    h3, m3, _ = counts(on)
    assert (h3 - h2, m3 - m2) == (0, 2)
    # completions: the prompt text is the key
    p = "The capital of France is"
    c1 = complete(on, p)
    h4, m4, _ = counts(on)
    assert (h4 - h3, m4 - m3) == (0, 1)
    assert complete(on, p) == c1
    assert complete(off, p) == c1
    h5, m5, _ = counts(on)
    assert (h5 - h4, m5 - m4) == (1, 0)
    # a prompt that differs in its last byte is another prompt
    complete(on, p + " ")
    assert counts(on)[1] == m5 + 1


def test_off_counts_nothing(servers):
    _, off = servers
    conv = [{"role": "user", "content": "Say hi."}]
    chat(off, conv)
    chat(off, conv)
    h, m, e = counts(off)
    assert (h, m, e) == (0, 0, 0)
