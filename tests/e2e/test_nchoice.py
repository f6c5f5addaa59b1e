"""n > 1 choices and logit_bias end to end with the official openai client
(docs/API.md, "Choices and logit_bias"): one prefill shared by the choices,
choice i equal to a single request with seed + i, streamed chunks carrying
their index, usage counting every choice's tokens and the prompt once, the
reply cached and replayed exactly (streamed and not); logit_bias -100 keeps a
token out, +100 forces it; bad n / logit_bias are 400s naming the field."""
import json
import pathlib
import struct

import openai
import pytest

from serverutil import SLOW, Server, metrics

MSG = [{"role": "user", "content": "Write one sentence about the sea."}]


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--parallel", "4"])
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="k-nchoice", timeout=60 * SLOW,
                         max_retries=0)


def gguf_tokens(path):
    """tokenizer.ggml.tokens of a GGUF file (a minimal reader: the KV section)."""
    with open(path, "rb") as f:
        data = f.read(16 << 20)
    off = 0

    def take(fmt):
        nonlocal off
        v = struct.unpack_from("<" + fmt, data, off)
        off += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal off
        n = take("Q")
        s = data[off:off + n].decode("utf-8", "replace")
        off += n
        return s

    sizes = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
             12: "d"}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(sizes[t])

    assert data[:4] == b"GGUF"
    off = 8
    take("Q")
    n_kv = take("Q")
    for _ in range(n_kv):
        key = string()
        v = value(take("I"))
        if key == "tokenizer.ggml.tokens":
            return v
    raise AssertionError("no tokenizer.ggml.tokens")


@pytest.fixture(scope="module")
def vocab(gguf_path):
    toks = gguf_tokens(gguf_path)
    return {t: i for i, t in enumerate(toks)}


def token_id(vocab, text):
    """The id of a one-token text (GPT-2 byte-level: a leading space is 'Ġ')."""
    return vocab[text.replace(" ", "\u0120")]


def test_n3_choices_equal_seeded_singles_and_one_prefill(server, client):
    base = dict(model="default", messages=MSG, max_tokens=10, temperature=1.0, extra_body={"top_k": 40},
                seed=1234)
    before = metrics(server)
    r = client.chat.completions.create(n=3, **base)
    after = metrics(server)
    assert [c.index for c in r.choices] == [0, 1, 2]
    texts = [c.message.content for c in r.choices]
    assert len(set(texts)) >= 2, texts
    for c in r.choices:
        assert c.finish_reason in ("stop", "length")
    # one prefill for three choices; usage counts the prompt once
    prefill = after["barista_prefill_tokens_total"] - before["barista_prefill_tokens_total"]
    assert prefill == r.usage.prompt_tokens - r.usage.prompt_tokens_details.cached_tokens
    # choice i is what a single request with seed + i answers
    singles = [client.chat.completions.create(**{**base, "seed": 1234 + i}) for i in range(3)]
    assert texts == [s.choices[0].message.content for s in singles]
    assert r.usage.prompt_tokens == singles[0].usage.prompt_tokens
    assert r.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_choices_interleave_by_index_then_cached_replays(server, client):
    base = dict(model="default", messages=[{"role": "user", "content": "Name three birds."}],
                max_tokens=8, temperature=0.9, seed=77, n=3)
    raw = client.chat.completions.with_raw_response.create(
        stream=True, stream_options={"include_usage": True}, **base)
    assert raw.headers["x-cache"] == "MISS"
    chunks = list(raw.parse())
    texts, finishes, roles = ["", "", ""], {}, set()
    for ch in chunks:
        for c in ch.choices:
            assert 0 <= c.index < 3
            if c.delta.role:
                roles.add(c.index)
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                assert c.index not in finishes  # one finish chunk per choice
                finishes[c.index] = c.finish_reason
    assert roles == {0, 1, 2}
    assert sorted(finishes) == [0, 1, 2]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens >= 3
    # the same body, not streamed: a cache hit with the same three choices
    raw2 = client.chat.completions.with_raw_response.create(**base)
    assert raw2.headers["x-cache"] == "HIT"
    r2 = raw2.parse()
    assert [c.message.content for c in r2.choices] == texts
    assert {c.index: c.finish_reason for c in r2.choices} == finishes
    assert r2.usage.completion_tokens == usage.completion_tokens
    assert r2.usage.prompt_tokens == usage.prompt_tokens
    # and streamed again: the replay has the same chunks per index
    raw3 = client.chat.completions.with_raw_response.create(stream=True, **base)
    assert raw3.headers["x-cache"] == "HIT"
    t3 = ["", "", ""]
    for ch in raw3.parse():
        for c in ch.choices:
            t3[c.index] += c.delta.content or ""
    assert t3 == texts


def test_completions_n_with_stop_and_logprobs(client):
    r = client.completions.create(model="default", prompt="My favourite fruit is", n=2,
                                  max_tokens=8, temperature=1.0, seed=5, stop=["."],
                                  logprobs=2)
    assert [c.index for c in r.choices] == [0, 1]
    for c in r.choices:
        assert "." not in c.text
        assert 1 <= len(c.logprobs.tokens) <= 8
        assert len(c.logprobs.token_logprobs) == len(c.logprobs.tokens)
    # a hit replays the same choices with their logprobs
    r2 = client.completions.create(model="default", prompt="My favourite fruit is", n=2,
                                   max_tokens=8, temperature=1.0, seed=5, stop=["."],
                                   logprobs=2)
    assert [c.text for c in r2.choices] == [c.text for c in r.choices]
    assert [c.logprobs.tokens for c in r2.choices] == [c.logprobs.tokens for c in r.choices]


def test_logit_bias_bans_and_forces(client, vocab):
    base = dict(model="default", prompt="The capital of France is", max_tokens=4,
                temperature=0, logprobs=1)
    plain = client.completions.create(**base)
    first = plain.choices[0].logprobs.tokens[0]
    banned_id = token_id(vocab, first)
    r = client.completions.create(logit_bias={str(banned_id): -100}, **base)
    assert first not in r.choices[0].logprobs.tokens
    banana = token_id(vocab, " banana")
    f = client.completions.create(logit_bias={str(banana): 100}, **base)
    assert f.choices[0].text == " banana" * 4
    # chat, sampled, n = 2: forced in every choice
    c = client.chat.completions.create(model="default", messages=MSG, max_tokens=3, n=2,
                                       temperature=1.0, seed=3,
                                       logit_bias={str(banana): 100})
    assert [x.message.content for x in c.choices] == [" banana" * 3] * 2


@pytest.mark.parametrize("kw,param,code", [
    ({"n": 17}, "n", 400),
    ({"n": 5}, "n", 400),  # the server decodes 4 sequences at once (--parallel 4)
    ({"n": 0}, "n", 400),
    ({"logit_bias": {"49152": 5}}, "logit_bias", 400),  # vocabulary is 0..49151
    ({"logit_bias": {"12": 101}}, "logit_bias", 400),
    ({"logit_bias": {"x": 1}}, "logit_bias", 400),
])
def test_bad_n_and_logit_bias(client, kw, param, code):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="default", messages=MSG, max_tokens=2, **kw)
    assert ei.value.status_code == code
    assert ei.value.body["param"] == param
    assert ei.value.body["type"] == "invalid_request_error"


def test_best_of_and_echo_are_clear_400s(client):
    for kw, param in (({"best_of": 2}, "best_of"), ({"echo": True}, "echo")):
        with pytest.raises(openai.BadRequestError) as ei:
            client.completions.create(model="default", prompt="x", max_tokens=2, **kw)
        assert ei.value.body["param"] == param


BARISTA_DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05,
                    "repeat_penalty": 1.0, "presence_penalty": 0, "frequency_penalty": 0}


def test_sampling_defaults_shown_and_explicit_values_win(server, client):
    models = json.loads(client.models.with_raw_response.list().text)["data"]
    chat = [m for m in models if m["meta"]["mode"] == "chat"]
    assert len(chat) >= 2  # the model and its alias "default"
    for m in chat:
        assert m["sampling_defaults"] == pytest.approx(BARISTA_DEFAULTS)
        src = m["sampling_defaults_from"]
        assert src["temperature"] == src["top_k"] == src["min_p"] == "barista"
        assert src["presence_penalty"] == "openai"
    base = dict(model="default", messages=[{"role": "user", "content": "Name a river."}],
                max_tokens=6, seed=42)
    # leaving the fields out = sending the defaults: the same resolved values, the same key
    raw1 = client.chat.completions.with_raw_response.create(**base)
    raw2 = client.chat.completions.with_raw_response.create(
        **base, temperature=0.8, top_p=0.95,
        extra_body={"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0})
    assert raw1.headers["x-cache"] == "MISS" and raw2.headers["x-cache"] == "HIT"
    assert raw1.headers["x-cache-key"] == raw2.headers["x-cache-key"]
    assert raw1.parse().choices[0].message.content == raw2.parse().choices[0].message.content
    # a request that sets a value gets exactly it (OpenAI's untruncated sampling here)
    raw3 = client.chat.completions.with_raw_response.create(
        **base, temperature=1.0, top_p=1.0, extra_body={"top_k": 0, "min_p": 0})
    assert raw3.headers["x-cache"] == "MISS"
    assert raw3.headers["x-cache-key"] != raw1.headers["x-cache-key"]
