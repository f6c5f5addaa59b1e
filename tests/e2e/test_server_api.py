"""`barista serve` through real clients: the official openai package (sync and
async, streaming and not, include_usage), curl -N, and the admin endpoints."""
import asyncio
import json
import shutil
import subprocess

import openai
import pytest

from serverutil import SLOW, Server, metrics, request

MSG = [{"role": "user", "content": "Name a color."}]


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--api-key", "sk-test-secret"])
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test-secret",
                         timeout=60 * SLOW, max_retries=0)


def test_chat_non_streaming(client):
    r = client.chat.completions.create(model="default", messages=MSG, max_tokens=8,
                                       temperature=0)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.created > 0
    assert r.model.startswith("SmolLM2")
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str) and c.message.content
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5
    assert 1 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_include_usage(client):
    stream = client.chat.completions.create(model="default", messages=MSG, max_tokens=8,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason in ("stop", "length")
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens >= 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # greedy: the stream says what the non-streamed reply says
    r = client.chat.completions.create(model="default", messages=MSG, max_tokens=8,
                                       temperature=0)
    assert text == r.choices[0].message.content
    assert usage.usage.completion_tokens == r.usage.completion_tokens


def test_chat_stream_without_usage(client):
    chunks = list(client.chat.completions.create(model="default", messages=MSG, max_tokens=4,
                                                 stream=True, temperature=0))
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_completions(client):
    r = client.completions.create(model="default", prompt="The capital of France is",
                                  max_tokens=6, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.usage.completion_tokens <= 6
    chunks = list(client.completions.create(model="default", prompt="The capital of France is",
                                            max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == r.choices[0].text
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_async_client(server):
    async def main():
        c = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="sk-test-secret",
                               timeout=60 * SLOW, max_retries=0)
        one = c.chat.completions.create(model="default", messages=MSG, max_tokens=6)
        two = c.chat.completions.create(model="default", messages=MSG, max_tokens=6,
                                        stream=True, stream_options={"include_usage": True})
        r, s = await asyncio.gather(one, two)
        got = [ch async for ch in s]
        await c.close()
        return r, got

    r, chunks = asyncio.run(main())
    assert r.choices[0].message.content is not None
    assert chunks[-1].usage is not None


def test_seed_reproducible(client):
    kw = dict(model="default", messages=MSG, max_tokens=8, temperature=0.9, seed=1234)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_stop_string(client):
    r = client.completions.create(model="default", prompt="1, 2, 3, 4, 5,", max_tokens=16,
                                  temperature=0)
    full = r.choices[0].text
    assert len(full) > 3
    stop = full[2:4]
    r2 = client.completions.create(model="default", prompt="1, 2, 3, 4, 5,", max_tokens=16,
                                   temperature=0, stop=[stop])
    assert r2.choices[0].finish_reason == "stop"
    assert stop not in r2.choices[0].text
    assert full.startswith(r2.choices[0].text)


def test_logprobs_chat(client):
    r = client.chat.completions.create(model="default", messages=MSG, max_tokens=4,
                                       temperature=0, logprobs=True, top_logprobs=2)
    lp = r.choices[0].logprobs.content
    assert 1 <= len(lp) <= 4
    for t in lp:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 2
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
    # greedy: the chosen token is the most likely one
    assert lp[0].token == lp[0].top_logprobs[0].token


def test_logprobs_completions(client):
    r = client.completions.create(model="default", prompt="Hello", max_tokens=3, temperature=0,
                                  logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert all(len(t) <= 2 for t in lp.top_logprobs)


def test_models(client, server):
    ids = [m.id for m in client.models.list().data]
    assert "default" in ids and any(i.startswith("SmolLM2") for i in ids)
    m = client.models.retrieve("default")
    assert m.id == "default"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_unknown_model_404(client):
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="gpt-17", messages=MSG, max_tokens=2)
    assert ei.value.body["code"] == "model_not_found"
    assert ei.value.body["param"] == "model"


def test_bad_param_400(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="default", messages=MSG, max_tokens=2, n=17)
    assert ei.value.body["param"] == "n"
    assert ei.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="default", messages=MSG, temperature=7)
    assert ei.value.body["param"] == "temperature"


def test_api_key_required(server):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        c.models.list()
    status, _, _ = request(server, "GET", "/health")
    assert status == 200


def test_health_ready(server):
    status, h, body = request(server, "GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, h, body = request(server, "GET", "/ready")
    assert status == 200 and json.loads(body)["status"] == "ready"
    status, h, body = request(server, "HEAD", "/health")
    assert status == 200 and body == b""


def test_404_405(server):
    status, _, body = request(server, "GET", "/v1/nothing-here")
    assert status == 404
    err = json.loads(body)["error"]
    assert err["type"] == "invalid_request_error" and "message" in err and "code" in err
    status, h, body = request(server, "GET", "/v1/chat/completions",
                              headers={"Authorization": "Bearer sk-test-secret"})
    assert status == 405 and h["allow"] == "POST"
    assert json.loads(body)["error"]["code"] == "method_not_allowed"
    status, h, body = request(server, "DELETE", "/health")
    assert status == 405


def test_config_endpoint_redacts(server):
    status, _, body = request(server, "GET", "/v1/config",
                              headers={"Authorization": "Bearer sk-test-secret"})
    assert status == 200
    assert b"sk-test-secret" not in body
    cfg = json.loads(body)["settings"]
    assert cfg["api-key"]["value"] == "***" and cfg["api-key"]["secret"] is True
    assert cfg["api-key"]["source"] == "flag"
    assert cfg["port"]["value"] == 0
    assert cfg["max-body-bytes"]["value"] == 1048576
    assert cfg["max-body-bytes"]["source"] == "default"


def test_metrics(server, client):
    client.chat.completions.create(model="default", messages=MSG, max_tokens=2)
    m = metrics(server)
    assert m['barista_requests_total{endpoint="chat_completions",code="200"}'] >= 1
    assert m["barista_generated_tokens_total"] >= 1
    assert m["barista_engine_active_sequences"] == 0
    assert "barista_ttft_seconds_count" in m


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_streaming(server):
    body = json.dumps({"model": "default", "messages": MSG, "max_tokens": 6, "stream": True})
    out = subprocess.run(["curl", "-sN", "--max-time", str(int(60 * SLOW)),
                          "-H", "Authorization: Bearer sk-test-secret",
                          "-H", "Content-Type: application/json",
                          "-d", body, server.url + "/v1/chat/completions"],
                         capture_output=True, text=True, check=True).stdout
    events = [ln[6:] for ln in out.split("\n") if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    first = json.loads(events[0])
    assert first["choices"][0]["delta"]["role"] == "assistant"
    out = subprocess.run(["curl", "-s", "-H", "Authorization: Bearer sk-test-secret",
                          "-d", json.dumps({"prompt": "Hi", "max_tokens": 3}),
                          server.url + "/v1/completions"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["object"] == "text_completion"
