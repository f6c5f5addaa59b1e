"""Several models in one server (--model NAME=PATH repeated, and a --models
YAML file in LiteLLM's model_list shape): routing by "model", /v1/models,
model_not_found, caches kept apart per model, per-model sampling defaults in
the cache key; and the request fields that change delivery only (priority,
timeout) with finish_reason "timeout"."""
import json

import openai
import pytest

from serverutil import SLOW, Server, metrics, request, sse_events

MSG = [{"role": "user", "content": "Name a color."}]


@pytest.fixture(scope="module")
def flag_server(barista_bin, gguf_path):
    # --no-admission: the timeout tests below test the deadline timers, which
    # admission control would otherwise pre-empt with a 503 on a slow build
    s = Server(barista_bin, "a=" + gguf_path, args=["--model", "b=" + gguf_path,
                                                    "--no-admission"])
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def yaml_server(barista_bin, gguf_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    f = d / "models.yaml"
    f.write_text(
        "model_list:\n"
        "  - model_name: a\n"
        "    litellm_params:\n"
        f"      model: local/{gguf_path}\n"
        "  - model_name: b\n"
        "    litellm_params:\n"
        f"      model: local/{gguf_path}\n"
        "      temperature: 0\n"
        "      max_tokens: 5\n"
        "    default: true\n"
        "  - model_name: quick\n"
        "    litellm_params:\n"
        f"      model: local/{gguf_path}\n"
        "      timeout: 0.25\n")
    # Server always passes -m PATH; the YAML's entries come first and the
    # default is the one marked in the file
    s = Server(barista_bin, "c=" + gguf_path, args=["--models", str(f)])
    yield s
    assert s.stop() == 0


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=60 * SLOW,
                         max_retries=0)


@pytest.mark.parametrize("which", ["flag_server", "yaml_server"])
def test_both_names_answer(request_fixture, which):
    s = request_fixture(which)
    c = client(s)
    for name in ("a", "b"):
        r = c.chat.completions.create(model=name, messages=MSG, max_tokens=4, temperature=0)
        assert r.model == name and r.choices[0].message.content
        r = c.completions.create(model=name, prompt="The sky is", max_tokens=4, temperature=0)
        assert r.model == name and r.choices[0].text
        chunks = list(c.chat.completions.create(model=name, messages=MSG, max_tokens=4,
                                                temperature=0, stream=True))
        assert all(ch.model == name for ch in chunks)
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        chunks = list(c.completions.create(model=name, prompt="The sky is", max_tokens=4,
                                           temperature=0, stream=True))
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices)


@pytest.fixture
def request_fixture(request):
    return request.getfixturevalue


@pytest.mark.parametrize("which", ["flag_server", "yaml_server"])
def test_models_lists_them(request_fixture, which):
    s = request_fixture(which)
    ids = [m.id for m in client(s).models.list().data]
    assert "a" in ids and "b" in ids and "default" in ids
    for m in client(s).models.list().data:
        assert m.object == "model" and m.created > 0 and m.owned_by == "barista"
    assert client(s).models.retrieve("b").id == "b"
    with pytest.raises(openai.NotFoundError):
        client(s).models.retrieve("nope")


def test_model_entry_timeout_bounds_its_requests(yaml_server):
    """A model entry's `timeout` (LiteLLM's litellm_params.timeout, seconds)
    is one of the budgets: the smallest of it, the request's and the
    server's applies."""
    import time
    body = {"model": "quick", "max_tokens": 3000, "ignore_eos": True, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a long story."}]}
    t0 = time.time()
    status, _, resp = request(yaml_server, "POST", "/v1/chat/completions",
                              body=json.dumps(body).encode(),
                              headers={"Content-Type": "application/json"})
    assert status in (503, 504), resp
    assert time.time() - t0 < 0.25 + 1.5 * SLOW
    # the same request to another entry is not cut at 0.25 s
    body = dict(body, model="a", max_tokens=6)
    status, _, _ = request(yaml_server, "POST", "/v1/chat/completions",
                           body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})
    assert status == 200


def test_unknown_model_is_404(flag_server):
    with pytest.raises(openai.NotFoundError) as ei:
        client(flag_server).chat.completions.create(model="nope", messages=MSG, max_tokens=2)
    assert ei.value.body["code"] == "model_not_found"
    assert ei.value.body["param"] == "model"
    status, _, body = request(flag_server, "POST", "/v1/completions",
                              json.dumps({"model": "nope", "prompt": "x"}))
    assert status == 404 and json.loads(body)["error"]["code"] == "model_not_found"


def test_default_is_first_flag_or_marked(flag_server, yaml_server):
    r = client(flag_server).chat.completions.create(model="default", messages=MSG, max_tokens=2,
                                                    temperature=0)
    assert r.model == "a"
    status, _, body = request(flag_server, "GET", "/ready")
    assert status == 200 and json.loads(body)["model"] == "a"
    status, _, body = request(yaml_server, "GET", "/ready")
    assert status == 200 and json.loads(body)["model"] == "b"
    # the fetched embedding model joins by default (--embedding-model auto)
    assert json.loads(body)["models"] == ["a", "b", "quick", "c", "all-MiniLM-L6-v2"]


def test_caches_never_shared_between_models(flag_server):
    body = {"messages": [{"role": "user", "content": "Say one word about tea."}],
            "max_tokens": 3, "temperature": 0}
    heads = {}
    for name in ("a", "b", "a", "b"):
        status, h, _ = request(flag_server, "POST", "/v1/chat/completions",
                               json.dumps(dict(body, model=name)))
        assert status == 200
        heads.setdefault(name, []).append(h)
    assert heads["a"][0]["x-cache"] == "MISS" and heads["b"][0]["x-cache"] == "MISS"
    assert heads["a"][1]["x-cache"] == "HIT" and heads["b"][1]["x-cache"] == "HIT"
    assert heads["a"][0]["x-cache-key"] != heads["b"][0]["x-cache-key"]


def test_model_defaults_reach_the_key(yaml_server):
    """b's YAML sets temperature 0 and max_tokens 5: a request that leaves them
    out is greedy (cacheable) on b, sampled (bypass) on a."""
    body = {"messages": [{"role": "user", "content": "Name a fruit."}]}
    status, h, resp = request(yaml_server, "POST", "/v1/chat/completions",
                              json.dumps(dict(body, model="b")))
    assert status == 200 and h["x-cache"] == "MISS"
    assert json.loads(resp)["usage"]["completion_tokens"] <= 5
    status, h2, _ = request(yaml_server, "POST", "/v1/chat/completions",
                            json.dumps(dict(body, model="b", temperature=0, max_tokens=5)))
    assert status == 200 and h2["x-cache"] == "HIT"  # the same values used: the same key
    assert h2["x-cache-key"] == h["x-cache-key"]
    status, h, _ = request(yaml_server, "POST", "/v1/chat/completions",
                           json.dumps(dict(body, model="a", max_tokens=2)))
    assert status == 200 and h["x-cache"] == "BYPASS"


def test_priority_and_timeout_are_not_in_the_key(flag_server):
    body = {"model": "a", "messages": [{"role": "user", "content": "Count to three."}],
            "max_tokens": 3, "temperature": 0}
    status, h1, _ = request(flag_server, "POST", "/v1/chat/completions", json.dumps(body))
    status, h2, _ = request(flag_server, "POST", "/v1/chat/completions",
                            json.dumps(dict(body, priority=-5, timeout=600)))
    assert status == 200 and h2["x-cache"] == "HIT" and h1["x-cache-key"] == h2["x-cache-key"]
    status, _, resp = request(flag_server, "POST", "/v1/chat/completions",
                              json.dumps(dict(body, priority="high")))
    assert status == 400 and json.loads(resp)["error"]["param"] == "priority"


def test_timeout_ends_stream_with_timeout(flag_server):
    body = {"model": "b", "prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": True,
            "stream": True, "timeout": 1.0}
    status, _, resp = request(flag_server, "POST", "/v1/completions", json.dumps(body),
                              timeout=60 * SLOW)
    assert status == 200
    events = sse_events(resp)
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "timeout"


def test_timeout_without_bytes_is_504(flag_server):
    body = {"model": "b", "prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": True,
            "timeout": 0.2}
    status, _, resp = request(flag_server, "POST", "/v1/completions", json.dumps(body),
                              timeout=60 * SLOW)
    assert status == 504 and json.loads(resp)["error"]["code"] == "timeout"


def test_request_duration_is_recorded(flag_server):
    before = metrics(flag_server).get(
        'barista_request_duration_seconds_count{endpoint="completions"}', 0)
    status, _, _ = request(flag_server, "POST", "/v1/completions",
                           json.dumps({"model": "a", "prompt": "Hi", "max_tokens": 2}))
    assert status == 200
    m = metrics(flag_server)
    assert m['barista_request_duration_seconds_count{endpoint="completions"}'] == before + 1
    assert m['barista_request_duration_seconds_sum{endpoint="completions"}'] > 0


def test_a_joiners_deadline_is_its_own(flag_server):
    """Two identical greedy requests coalesce ("timeout" is not in the key).
    The leader's short deadline ends the leader alone (504); the joiner keeps
    following the generation to its end."""
    import threading
    import time
    body = {"model": "a", "prompt": "Once upon a time", "max_tokens": 150, "temperature": 0,
            "ignore_eos": True}
    out = {}

    def send(name, timeout):
        out[name] = request(flag_server, "POST", "/v1/completions",
                            json.dumps(dict(body, timeout=timeout)), timeout=120 * SLOW)

    t1 = threading.Thread(target=send, args=("leader", 0.5))
    t2 = threading.Thread(target=send, args=("joiner", 600))
    t1.start()
    time.sleep(0.05)
    t2.start()
    t1.join()
    t2.join()
    status, _, resp = out["leader"]
    assert status == 504 and json.loads(resp)["error"]["code"] == "timeout"
    status, h, resp = out["joiner"]
    assert status == 200 and h["x-cache"] == "COALESCED"
    r = json.loads(resp)
    assert r["usage"]["completion_tokens"] == 150 and r["choices"][0]["finish_reason"] == "length"


def test_a_joiner_outlives_its_leaders_disconnect(flag_server):
    """The leader of a coalesced generation hangs up mid-stream: the joiner
    still gets the whole reply ("stream" is not in the key, so a streamed
    leader and a non-streamed joiner share one generation)."""
    import socket
    import threading
    import time
    body = {"model": "a", "prompt": "The history of coffee", "max_tokens": 150,
            "temperature": 0, "ignore_eos": True}
    data = json.dumps(dict(body, stream=True)).encode()
    s = socket.create_connection((flag_server.host, flag_server.port), timeout=60 * SLOW)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(data) + data)
    buf = b""
    while b"data:" not in buf:  # the leader's stream has started
        chunk = s.recv(65536)
        assert chunk
        buf += chunk
    out = {}

    def joiner():
        out["r"] = request(flag_server, "POST", "/v1/completions", json.dumps(body),
                           timeout=120 * SLOW)

    t = threading.Thread(target=joiner)
    t.start()
    time.sleep(0.3 * SLOW)
    s.close()  # the leader leaves
    t.join()
    status, h, resp = out["r"]
    assert status == 200 and h["x-cache"] == "COALESCED"
    r = json.loads(resp)
    assert r["usage"]["completion_tokens"] == 150 and r["choices"][0]["finish_reason"] == "length"
