"""Admission on expected COMPLETION (issue 11, item 3): a request whose first
token would come in time but whose last token cannot is refused at once (a
503 overloaded, or its fallback chain) instead of being started and cut by
its budget mid-way; a fallback chain's model step applies the same test with
what is left of the budget; an interactive request is admitted although
batch work fills the engine, since it pre-empts that work. Through the
official client (max_retries=0). Bounds are generous for the sanitizer
build; precise figures belong to bench/overload."""
import json
import time

import openai
import pytest

from serverutil import SLOW, Server, chat, metrics, wait_for

LONG = {"max_tokens": 3000, "ignore_eos": True, "temperature": 0,
        "messages": [{"role": "user", "content": "Write a very long story."}]}
NS = {"Cache-Control": "no-store"}


def model_list(gguf):
    return (
        "model_list:\n"
        "  - model_name: plain\n"
        "    litellm_params:\n"
        f"      model: local/{gguf}\n"
        "      parallel: 2\n"
        "  - model_name: chained\n"
        "    litellm_params:\n"
        f"      model: local/{gguf}\n"
        "      parallel: 1\n"
        "    fallbacks: [\"model:plain\", \"static:Busy, please retry.\"]\n")


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path, tmp_path_factory):
    f = tmp_path_factory.mktemp("admit") / "models.yaml"
    f.write_text(model_list(gguf_path))
    s = Server(barista_bin, None, args=["--models", str(f), "--embedding-model", "none"])
    # both engines measure their costs (admission judges by them)
    for m in ("plain", "chained"):
        st, _, _ = chat(s, dict(LONG, model=m, max_tokens=24), NS)
        assert st == 200
    yield s
    assert s.stop() == 0


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                         timeout=60 * SLOW)


class Blocker:
    """A long generation on `model`, sent on a raw connection never read;
    closing it cancels the generation."""

    def __init__(self, server, model, extra=None, headers=b""):
        self.conn = server.connect()
        body = json.dumps(dict(LONG, model=model, **(extra or {}))).encode()
        self.conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\nCache-Control: no-store\r\n"
                          + headers + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    def close(self):
        self.conn.close()


def test_completion_that_cannot_fit_is_refused_at_once(server):
    """plain (2 places) decodes a long answer; a request asking for 1,500
    tokens with a budget its first token easily meets but its last cannot:
    a 503 at once (the old first-token-only test let it start, and its stream
    was cut by the budget); the same request for 8 tokens is served."""
    assert wait_for(lambda: metrics(server)["barista_api_generations"] == 0)
    b = Blocker(server, "plain")
    try:
        assert wait_for(lambda: metrics(server)["barista_engine_active_sequences"] >= 1)
        time.sleep(0.3 * SLOW)
        budget = int(3000 * SLOW)
        cl = client(server)
        t0 = time.time()
        with pytest.raises(openai.APIStatusError) as ei:
            cl.chat.completions.create(
                model="plain", messages=LONG["messages"], max_tokens=1500, temperature=0,
                stream=True, extra_body={"ignore_eos": True},
                extra_headers=dict(NS, **{"X-Timeout-Ms": str(budget)}))
        took = time.time() - t0
        e = ei.value
        assert e.status_code == 503
        assert e.body["code"] == "overloaded" and "completion" in e.body["message"]
        assert int(e.response.headers["retry-after"]) >= 1
        assert took < 1.0 * SLOW, took  # at once: a third of the budget, on a loaded box
        # its first token would have come in time: the short one is admitted
        t0 = time.time()
        r = cl.chat.completions.create(
            model="plain", messages=LONG["messages"], max_tokens=8, temperature=0,
            extra_body={"ignore_eos": True},
            extra_headers=dict(NS, **{"X-Timeout-Ms": str(budget)}))
        assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 8
        assert time.time() - t0 < budget / 1000
        assert metrics(server)['barista_rejected_requests_total{reason="budget"}'] >= 1
    finally:
        b.close()


def test_chain_skips_a_model_step_that_cannot_complete(server):
    """chained (1 place) is busy; its chain's model step (plain, idle) would
    give a first token at once but not 1,500 tokens within the budget: the
    chain goes on to its static step at once instead of starting a
    generation the budget would cut. 8 tokens fit: plain answers them."""
    assert wait_for(lambda: metrics(server)["barista_api_generations"] == 0)
    b = Blocker(server, "chained")
    try:
        assert wait_for(lambda: metrics(server)["barista_engine_active_sequences"] >= 1)
        time.sleep(0.3 * SLOW)
        cl = client(server)
        hdr = dict(NS, **{"X-Timeout-Ms": str(int(3000 * SLOW))})
        t0 = time.time()
        raw = cl.chat.completions.with_raw_response.create(
            model="chained", messages=LONG["messages"], max_tokens=1500, temperature=0,
            stream=True, extra_body={"ignore_eos": True}, extra_headers=hdr)
        assert raw.headers["x-fallback"] == "static"
        chunks = list(raw.parse())
        took = time.time() - t0
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
            "Busy, please retry."
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert took < 1.0 * SLOW, took  # at once: a third of the budget, on a loaded box
        raw = cl.chat.completions.with_raw_response.create(
            model="chained", messages=LONG["messages"], max_tokens=8, temperature=0,
            extra_body={"ignore_eos": True}, extra_headers=hdr)
        assert raw.headers["x-fallback"] == "model:plain"
        r = raw.parse()
        assert r.model == "plain" and r.usage.completion_tokens == 8
    finally:
        b.close()


def test_interactive_admitted_past_batch_work_it_preempts(server):
    """plain's 2 places run batch work and 2 more batch requests wait: a
    batch request with a 2 s budget cannot get a place in time and is
    refused; an interactive one with the same budget is admitted — the batch
    work is no obstacle, it pre-empts it — and finishes within its budget."""
    # the earlier tests' blockers are gone (closing cancels them)
    assert wait_for(lambda: metrics(server)["barista_api_generations"] == 0)
    assert wait_for(lambda: metrics(server)["barista_engine_active_sequences"] == 0)
    flood = []
    try:
        for i in range(4):
            flood.append(Blocker(server, "plain", {"max_tokens": 400, "seed": i},
                                 b"X-Priority: batch\r\n"))
        assert wait_for(lambda: metrics(server)["barista_api_generations"] >= 4)
        assert wait_for(lambda: metrics(server)["barista_engine_active_sequences"] >= 2)
        time.sleep(0.3 * SLOW)
        cl = client(server)
        budget = int(2000 * SLOW)
        q = dict(model="plain", messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
                 temperature=0, extra_body={"ignore_eos": True})
        with pytest.raises(openai.APIStatusError) as ei:
            cl.chat.completions.create(**q, extra_headers=dict(
                NS, **{"X-Timeout-Ms": str(budget), "X-Priority": "batch"}))
        assert ei.value.status_code == 503 and ei.value.body["code"] == "overloaded"
        pre0 = metrics(server)["barista_preemptions_total"]
        t0 = time.time()
        r = cl.chat.completions.create(**q, extra_headers=dict(
            NS, **{"X-Timeout-Ms": str(budget), "X-Priority": "interactive"}))
        took = time.time() - t0
        assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 6
        assert took < budget / 1000, took
        assert metrics(server)["barista_preemptions_total"] >= pre0 + 1
    finally:
        for b in flood:
            b.close()
