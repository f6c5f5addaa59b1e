"""Fallback chains (issue 11, item 2): a model's `fallbacks:` in the model
list (an entry key, or LiteLLM's router_settings shape) answer a request
whose budget will be missed (admission) or ran out before the first byte:
another model, the semantic cache at a relaxed threshold, a static text.
X-Fallback + "barista_fallback" say which; an exhausted chain is a 504 with
type "timeout"; a chain naming an unknown model stops the start-up."""
import hashlib
import json
import subprocess
import time

import openai
import pytest

from serverutil import SLOW, Server, chat, metrics, sse_events, wait_for
from upstream_stub import Stub

LONG = {"max_tokens": 2000, "ignore_eos": True, "temperature": 0,
        "messages": [{"role": "user", "content": "Write a very long story."}]}
SHORT = {"max_tokens": 4, "temperature": 0,
         "messages": [{"role": "user", "content": "Say hi."}]}


def model_list(gguf):
    return (
        "model_list:\n"
        "  - model_name: big\n"
        "    litellm_params:\n"
        f"      model: local/{gguf}\n"
        "      parallel: 1\n"
        "    fallbacks: [\"model:small\", \"static:Busy, please retry.\"]\n"
        "  - model_name: small\n"
        "    litellm_params:\n"
        f"      model: local/{gguf}\n"
        "      parallel: 1\n"
        "  - model_name: lone\n"
        "    litellm_params:\n"
        f"      model: local/{gguf}\n"
        "      parallel: 1\n"
        "router_settings:\n"
        "  fallbacks: [{\"small\": [\"static:Sorry, small is busy.\"]}, {\"lone\": [\"semantic\"]}]\n")


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path, tmp_path_factory):
    f = tmp_path_factory.mktemp("fb") / "models.yaml"
    f.write_text(model_list(gguf_path))
    s = Server(barista_bin, gguf_path, args=["--models", str(f)])
    yield s
    assert s.stop() == 0


class Blocker:
    """A long generation on `model` that keeps its only slot busy, sent on a
    raw connection never read; closing it cancels the generation."""

    def __init__(self, server, model):
        self.conn = server.connect()
        body = json.dumps(dict(LONG, model=model)).encode()
        self.conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\nCache-Control: no-store\r\n"
                          + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    def close(self):
        self.conn.close()


def test_model_then_static_fallback_when_busy(server):
    # measure the engines' costs first (admission needs them)
    for m in ("big", "small"):
        assert chat(server, dict(SHORT, model=m), {"Cache-Control": "no-store"})[0] == 200
    b = Blocker(server, "big")
    try:
        assert wait_for(lambda: metrics(server)["barista_api_generations"] >= 1)
        time.sleep(0.2 * SLOW)  # a few of its tokens: the estimate sees 2000 to go
        # big's queue is ~2000 tokens ahead: admission sends it down the chain
        t0 = time.time()
        st, h, body = chat(server, dict(SHORT, model="big"),
                           {"X-Timeout-Ms": str(int(5000 * SLOW)), "Cache-Control": "no-store"})
        took = time.time() - t0
        assert st == 200, body
        assert h["x-fallback"] == "model:small"
        assert body["barista_fallback"] == "model:small"
        assert body["model"] == "small"
        assert body["choices"][0]["message"]["content"]
        assert took < 5 * SLOW
        # the same through the official client, streamed
        cl = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                           timeout=60 * SLOW)
        raw = cl.chat.completions.with_raw_response.create(
            model="big", messages=SHORT["messages"], max_tokens=4, temperature=0, stream=True,
            extra_headers={"X-Timeout-Ms": str(int(5000 * SLOW))})
        assert raw.headers["x-fallback"] == "model:small"
        chunks = list(raw.parse())
        assert chunks and all(c.model_extra.get("barista_fallback") == "model:small"
                              for c in chunks)
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        # a 50 ms budget against the busy engine: an answer from the chain, in time
        t0 = time.time()
        st, h, body = chat(server, dict(SHORT, model="big"), {"X-Timeout-Ms": "50"})
        took = time.time() - t0
        assert st == 200, body
        assert h["x-fallback"] in ("model:small", "static")
        assert took < 0.05 + 0.5 * SLOW, took
        # small busy too: the chain's model step cannot start, its static step answers
        b2 = Blocker(server, "small")
        try:
            assert wait_for(lambda: metrics(server)["barista_api_generations"] >= 2)
            time.sleep(0.2 * SLOW)
            st, h, body = chat(server, dict(SHORT, model="big"),
                               {"X-Timeout-Ms": str(int(3000 * SLOW))})
            assert st == 200, body
            assert h["x-fallback"] == "static"
            assert body["barista_fallback"] == "static"
            assert body["choices"][0]["message"]["content"] == "Busy, please retry."
            assert body["choices"][0]["finish_reason"] == "stop"
        finally:
            b2.close()
    finally:
        b.close()
    m = metrics(server)
    assert m['barista_fallbacks_total{step="model"}'] >= 2
    assert m['barista_fallbacks_total{step="static"}'] >= 1


def test_static_fallback_after_first_token_budget(server):
    # LiteLLM's router_settings shape; the first token cannot come in 1 ms
    t0 = time.time()
    st, h, body = chat(server, dict(SHORT, model="small", max_tokens=64),
                       {"X-First-Token-Timeout-Ms": "1", "Cache-Control": "no-store"})
    assert st == 200, body
    assert h["x-fallback"] == "static"
    assert "x-cache" not in h and "x-cache-key" not in h  # not an answer from the cache
    assert body["choices"][0]["message"]["content"] == "Sorry, small is busy."
    assert time.time() - t0 < 0.5 * SLOW
    # streamed: the whole reply as SSE, ending with [DONE]
    st, h, ev = chat(server, dict(SHORT, model="small", max_tokens=64, stream=True),
                     {"X-First-Token-Timeout-Ms": "1", "Cache-Control": "no-store"})
    assert st == 200 and h["x-fallback"] == "static"
    assert ev[-1] == "[DONE]"
    assert json.loads(ev[-2])["barista_fallback"] == "static"


def test_exhausted_chain_is_504_timeout(server):
    # lone's chain is one semantic step and the semantic cache is off
    t0 = time.time()
    st, h, body = chat(server, dict(SHORT, model="lone", max_tokens=64),
                       {"X-First-Token-Timeout-Ms": "1"})
    assert st == 504, body
    assert body["error"]["type"] == "timeout"
    assert "x-fallback" not in h
    assert time.time() - t0 < 0.5 * SLOW
    assert metrics(server)['barista_fallbacks_total{step="exhausted"}'] >= 1


def test_mid_stream_expiry_ends_cleanly_and_is_not_cached(barista_bin, gguf_path, tmp_path):
    # --no-admission: with admission a measured engine refuses (here: runs
    # the chain for) a request whose 400 tokens cannot come within its budget
    f = tmp_path / "models.yaml"
    f.write_text(model_list(gguf_path))
    server = Server(barista_bin, gguf_path, args=["--models", str(f), "--no-admission"])
    try:
        body = dict(LONG, model="lone", max_tokens=400, stream=True)
        for _ in range(2):
            st, h, ev = chat(server, body, {"X-Timeout-Ms": str(int(400 * SLOW))})
            assert st == 200
            assert h.get("x-cache") == "MISS"  # the cut-short first one was never stored
            assert "x-fallback" not in h       # bytes went out: no fallback
            assert ev[-1] == "[DONE]"
            last = json.loads(ev[-2])
            assert last["choices"][0]["finish_reason"] == "timeout"
    finally:
        assert server.stop() == 0


def refused(barista_bin, gguf_path, f):
    """Start barista with model list f: it must exit non-zero; its output."""
    p = subprocess.run([barista_bin, "serve", "--port", "0", "-m", gguf_path, "--models", str(f)],
                       capture_output=True, text=True, timeout=60 * SLOW)
    assert p.returncode != 0
    return p.stdout + p.stderr


def test_chain_naming_unknown_model_refuses_start(barista_bin, gguf_path, tmp_path):
    f = tmp_path / "models.yaml"
    f.write_text(
        "model_list:\n"
        "  - model_name: big\n"
        "    litellm_params:\n"
        f"      model: local/{gguf_path}\n"
        "    fallbacks: [\"model:nope\", \"static:x\"]\n")
    out = refused(barista_bin, gguf_path, f)
    assert 'model "big": fallback step "model:nope" names an unknown model "nope"' in out
    assert len(out.strip().splitlines()) == 1, out
    # LiteLLM's form: a chain for a model that is not in the list
    f.write_text(
        "model_list:\n"
        "  - model_name: big\n"
        "    litellm_params:\n"
        f"      model: local/{gguf_path}\n"
        "litellm_settings:\n"
        "  fallbacks: [{\"ghost\": [\"big\"]}]\n")
    assert 'unknown model "ghost"' in refused(barista_bin, gguf_path, f)


def test_semantic_fallback_is_approximate(barista_bin, gguf_path, models_dir, tmp_path):
    f = tmp_path / "models.yaml"
    f.write_text(
        "model_list:\n"
        "  - model_name: smol\n"
        "    litellm_params:\n"
        f"      model: local/{gguf_path}\n"
        "      parallel: 1\n"
        "    fallbacks: [\"semantic:0.5\", \"static:none close enough\"]\n")
    s = Server(barista_bin, "c=" + gguf_path,
               args=["--models", str(f), "--embedding-model",
                     str(models_dir / "all-MiniLM-L6-v2"), "--semantic-cache"])
    b = None
    try:
        def ask(q, h=None):
            return chat(s, {"model": "smol", "temperature": 0, "max_tokens": 6,
                            "messages": [{"role": "user", "content": q}]}, h)
        st, h, a = ask("How do I reset my password?")
        if st == 503:
            pytest.skip("this build serves no embedding model")
        assert st == 200 and h["x-cache"] == "MISS"
        # the engine busy for a long while: admission sends the next ones down
        # the chain once their query is embedded and looked up at 0.95
        b = Blocker(s, "smol")
        assert wait_for(lambda: metrics(s)["barista_api_generations"] >= 1)
        time.sleep(0.2 * SLOW)
        budget = {"X-Timeout-Ms": str(int(5000 * SLOW))}
        # too far for the tier's 0.95, close enough for the relaxed step
        st, h, r = ask("How can I change my password?", budget)
        assert st == 200, r
        assert h["x-fallback"] == "semantic"
        assert h["x-cache-tier"] == "semantic"
        assert 0.5 <= float(h["x-cache-similarity"]) < 0.95
        assert r["barista_fallback"] == "semantic"
        assert r["choices"][0]["message"]["content"] == a["choices"][0]["message"]["content"]
        # nothing close: the next step
        st, h, r = ask("What is the boiling point of water?", budget)
        assert st == 200 and h["x-fallback"] == "static", (h, r)
        assert metrics(s)['barista_fallbacks_total{step="semantic"}'] == 1
    finally:
        if b:
            b.close()
        assert s.stop() == 0


def test_step_naming_a_replica_group(barista_bin, tmp_path):
    """A chain step `model:grp` where grp is a gateway replica group: the
    request goes to the group (whose own retries skip its failing replica)
    once the first upstream cannot answer in time. router_settings carries
    both the group's routing keys and the chain (one reader). A tenant that
    may not use the group skips that step."""
    stub = Stub()
    f = tmp_path / "models.yaml"
    f.write_text(
        "model_list:\n"
        f"  - model_name: hung\n    litellm_params: {{model: openai/stub, api_base: '{stub.base('hang')}'}}\n"
        f"  - model_name: grp\n    litellm_params: {{model: openai/stub, api_base: '{stub.base('500')}'}}\n"
        f"  - model_name: grp\n    litellm_params: {{model: openai/stub, api_base: '{stub.base('ok')}'}}\n"
        "router_settings:\n"
        "  routing_strategy: simple-shuffle\n"
        "  num_retries: 1\n"
        "  cooldown_time: 0\n"
        "  fallbacks: [{hung: [\"model:grp\", \"static:Busy.\"]}]\n")
    # two tenants: one may use grp, the other only hung (its model step is skipped)
    sha = lambda k: hashlib.sha256(k.encode()).hexdigest()  # noqa: E731
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n"
                    f"  - {{key_sha256: {sha('sk-all')}, tenant: all}}\n"
                    f"  - {{key_sha256: {sha('sk-hung')}, tenant: only-hung, models: [hung]}}\n")
    gw = Server(barista_bin, None, ["--models", str(f), "--embedding-model", "none",
                                    "--keys", str(keys)])
    try:
        budget = {"X-First-Token-Timeout-Ms": str(int(300 * SLOW)),
                  "X-Timeout-Ms": str(int(10000 * SLOW)), "Cache-Control": "no-store",
                  "Authorization": "Bearer sk-all"}
        for i in range(4):  # shuffle: some land on grp's 500 replica first, then retry
            t0 = time.time()
            st, h, body = chat(gw, dict(SHORT, model="hung",
                                        messages=[{"role": "user", "content": f"q{i}"}]), budget)
            assert st == 200, body
            assert h["x-fallback"] == "model:grp"
            assert body["barista_fallback"] == "model:grp"
            assert body["model"] == "grp"
            assert body["choices"][0]["message"]["content"] == "Hello stub"
            assert time.time() - t0 < 0.3 * SLOW + 3
        modes = [c["mode"] for c in stub.calls if c["mode"] != "GET"]
        assert modes.count("hang") == 4 and modes.count("ok") == 4, modes
        # the same streamed through the official client
        cl = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-all", max_retries=0,
                           timeout=60 * SLOW)
        raw = cl.chat.completions.with_raw_response.create(
            model="hung", messages=[{"role": "user", "content": "streamed"}], max_tokens=4,
            stream=True, extra_headers={k: v for k, v in budget.items() if k != "Authorization"})
        assert raw.headers["x-fallback"] == "model:grp"
        chunks = list(raw.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
            "Hello stub"
        assert all(c.model_extra.get("barista_fallback") == "model:grp" for c in chunks)
        # a tenant that may not use grp: the chain skips that step
        st, h, body = chat(gw, dict(SHORT, model="hung"),
                           dict(budget, Authorization="Bearer sk-hung"))
        assert st == 200, body
        assert h["x-fallback"] == "static"
        assert body["choices"][0]["message"]["content"] == "Busy."
        m = metrics(gw)
        assert m['barista_fallbacks_total{step="model"}'] == 5
        assert m['barista_fallbacks_total{step="static"}'] == 1
    finally:
        assert gw.stop() == 0
        stub.stop()
