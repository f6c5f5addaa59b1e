"""Malformed and invalid request bodies: every one gets a 400 with an OpenAI
error body naming the problem, and the server keeps serving."""
import json
import re

import pytest

from serverutil import Server, request

U = [{"role": "user", "content": "hi"}]

# (path, raw body, expected param or None)
BAD_JSON = [
    ("/v1/chat/completions", "", None),
    ("/v1/chat/completions", "{", None),
    ("/v1/chat/completions", "}", None),
    ("/v1/chat/completions", "nul", None),
    ("/v1/chat/completions", "{\"messages\": [}", None),
    ("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}],}", None),
    ("/v1/chat/completions", "{'messages': []}", None),
    ("/v1/chat/completions", "{\"messages\": \"\\x\"}", None),
    ("/v1/chat/completions", "{\"messages\": \"\\ud800\"", None),
    ("/v1/chat/completions", "[" * 5000 + "]" * 5000, None),
    ("/v1/chat/completions", "{\"a\":1} {\"b\":2}", None),
    ("/v1/chat/completions", "[]", None),
    ("/v1/chat/completions", "42", None),
    ("/v1/chat/completions", "\"a string\"", None),
    ("/v1/chat/completions", "null", None),
    ("/v1/chat/completions", "\xff\xfe{}", None),
    ("/v1/completions", "{\"prompt\": \"unterminated}", None),
    ("/v1/completions", "{\"prompt\" \"x\"}", None),
    ("/v1/completions", "{\"prompt\": tru}", None),
    ("/v1/completions", "{\"prompt\": \"x\", \"temperature\": NaN}", None),
    ("/v1/completions", "{\"prompt\": \"x\"\x00}", None),
]

BAD_VALUES = [
    ("/v1/chat/completions", {}, "messages"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": "hi"}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, "messages[0].content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]}, "messages[0].content[0].type"),
    ("/v1/chat/completions", {"messages": U, "max_tokens": "8"}, "max_tokens"),
    ("/v1/chat/completions", {"messages": U, "max_tokens": 0}, "max_tokens"),
    ("/v1/chat/completions", {"messages": U, "max_completion_tokens": -3},
     "max_completion_tokens"),
    ("/v1/chat/completions", {"messages": U, "temperature": -1}, "temperature"),
    ("/v1/chat/completions", {"messages": U, "top_p": 2}, "top_p"),
    ("/v1/chat/completions", {"messages": U, "top_k": "x"}, "top_k"),
    ("/v1/chat/completions", {"messages": U, "min_p": 1.5}, "min_p"),
    ("/v1/chat/completions", {"messages": U, "seed": 1.5}, "seed"),
    ("/v1/chat/completions", {"messages": U, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("/v1/chat/completions", {"messages": U, "stop": 5}, "stop"),
    ("/v1/chat/completions", {"messages": U, "presence_penalty": 9}, "presence_penalty"),
    ("/v1/chat/completions", {"messages": U, "frequency_penalty": "a"}, "frequency_penalty"),
    ("/v1/chat/completions", {"messages": U, "n": 17}, "n"),
    ("/v1/chat/completions", {"messages": U, "stream": 1}, "stream"),
    ("/v1/chat/completions", {"messages": U, "stream": True, "stream_options": []},
     "stream_options"),
    ("/v1/chat/completions", {"messages": U, "top_logprobs": 3}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": U, "logprobs": "yes"}, "logprobs"),
    ("/v1/chat/completions", {"messages": U, "user": 7}, "user"),
    ("/v1/chat/completions", {"messages": U, "model": ["a"]}, "model"),
    ("/v1/completions", {"prompt": 5}, "prompt"),
    ("/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 1e999}", "max_tokens"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "prompt"),
    ("/v1/completions", {"prompt": "x", "logprobs": 9}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "echo": True}, "echo"),
]


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--ctx", "256"])
    yield s
    assert s.stop() == 0


def check_error(status, body, want_status=400):
    assert status == want_status, body
    e = json.loads(body)["error"]
    assert e["type"] == "invalid_request_error"
    assert isinstance(e["message"], str) and e["message"]
    assert "param" in e and "code" in e
    return e


@pytest.mark.parametrize("path,body,param", BAD_JSON)
def test_malformed_json(server, path, body, param):
    status, _, resp = request(server, "POST", path, body.encode("utf-8", "surrogateescape")
                              if isinstance(body, str) else body)
    e = check_error(status, resp)
    assert e["param"] is None
    assert e["code"] in ("invalid_json", "invalid_type", "invalid_value")


@pytest.mark.parametrize("path,obj,param", BAD_VALUES)
def test_bad_values(server, path, obj, param):
    status, _, resp = request(server, "POST", path,
                              obj if isinstance(obj, str) else json.dumps(obj))
    e = check_error(status, resp)
    assert e["param"] == param, e


def test_unknown_fields_ignored(server):
    status, _, resp = request(server, "POST", "/v1/completions",
                              json.dumps({"prompt": "Hi", "max_tokens": 1, "frobnicate": {"a": 1},
                                          "metadata": None}))
    assert status == 200, resp


def test_prompt_longer_than_context(server):
    status, _, resp = request(server, "POST", "/v1/completions",
                              json.dumps({"prompt": "hello " * 400, "max_tokens": 4}))
    e = check_error(status, resp)
    assert e["code"] == "context_length_exceeded"
    nums = [int(x) for x in re.findall(r"\d+", e["message"])]
    assert 256 in nums and max(nums) > 256  # the limit and the prompt's token count


def test_max_tokens_capped_by_context(server):
    status, _, resp = request(server, "POST", "/v1/completions",
                              json.dumps({"prompt": "hello " * 240, "max_tokens": 100000,
                                          "ignore_eos": True}), timeout=120)
    assert status == 200, resp
    r = json.loads(resp)
    assert r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"] <= 256
    assert r["choices"][0]["finish_reason"] == "length"


def test_server_still_fine(server):
    assert request(server, "GET", "/health")[0] == 200


def test_big_bodies_tokenized_off_the_loop(server):
    """Bodies over 8 KiB are tokenized on the thread pool: same answers."""
    status, _, resp = request(server, "POST", "/v1/completions",
                              json.dumps({"prompt": "Hi", "max_tokens": 2, "pad": "x" * 20000}))
    assert status == 200, resp
    assert json.loads(resp)["usage"]["completion_tokens"] >= 1
    status, _, resp = request(server, "POST", "/v1/chat/completions",
                              json.dumps({"messages": [{"role": "user", "content": "Hi"}],
                                          "max_tokens": 2, "stream": True, "pad": "x" * 20000}))
    assert status == 200 and b"data: [DONE]" in resp
    status, _, resp = request(server, "POST", "/v1/completions",
                              json.dumps({"prompt": "hello " * 3000, "max_tokens": 2}))
    assert check_error(status, resp)["code"] == "context_length_exceeded"
