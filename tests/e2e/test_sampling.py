"""Sampled decoding through the server with the official openai client: a
seeded request gives the same tokens (and logprobs) whether it runs alone or
together with others in one engine step, where the samplers of a step run in
parallel on the worker pool; top_k 1 is greedy."""
import asyncio

import openai
import pytest

from serverutil import SLOW, Server

PROMPT = "Write a short story about a lighthouse keeper."

# (sampling fields, logprobs asked) of six concurrent requests
CASES = [
    ({"temperature": 0.9, "seed": 11}, False),
    ({"temperature": 0.9, "seed": 12, "top_p": 0.9}, False),
    ({"temperature": 0.9, "seed": 13, "extra_body": {"top_k": 40, "min_p": 0.05}}, False),
    ({"temperature": 1.3, "seed": 14, "presence_penalty": 0.8}, False),
    ({"temperature": 0.9, "seed": 15, "extra_body": {"min_p": 0.1}}, True),
    ({"temperature": 0.0}, True),
]


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path):
    # no response cache: every seeded request must reach the engine
    s = Server(barista_bin, gguf_path, args=["--parallel", "8", "--cache-mem", "0"])
    yield s
    assert s.stop() == 0


def kwargs(case):
    fields, lp = case
    kw = dict(model="default", prompt=PROMPT, max_tokens=24,
              extra_body={"ignore_eos": True}, **{k: v for k, v in fields.items()
                                                  if k != "extra_body"})
    kw["extra_body"] = dict(kw["extra_body"], **fields.get("extra_body", {}))
    if lp:
        kw["logprobs"] = 2
    return kw


def summary(r):
    c = r.choices[0]
    lp = None
    if c.logprobs:
        lp = (c.logprobs.tokens, [round(x, 4) for x in c.logprobs.token_logprobs])
    return c.text, r.usage.completion_tokens, lp


def test_seeded_alone_equals_together(server):
    sync = openai.OpenAI(base_url=server.url + "/v1", api_key="x", timeout=120 * SLOW,
                         max_retries=0)
    alone = [summary(sync.completions.create(**kwargs(c))) for c in CASES]
    for text, n, _ in alone:
        assert n == 24 and text

    async def together():
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                    timeout=120 * SLOW, max_retries=0)
        rs = await asyncio.gather(*[client.completions.create(**kwargs(c)) for c in CASES])
        await client.close()
        return [summary(r) for r in rs]

    for _ in range(2):
        assert asyncio.run(together()) == alone
    # different seeds, different texts: the seeds are not ignored
    assert len({a[0] for a in alone[:4]}) == 4


def test_top_k_1_is_greedy(server):
    sync = openai.OpenAI(base_url=server.url + "/v1", api_key="x", timeout=120 * SLOW,
                         max_retries=0)
    greedy = sync.completions.create(model="default", prompt=PROMPT, max_tokens=16,
                                     temperature=0).choices[0].text
    k1 = sync.completions.create(model="default", prompt=PROMPT, max_tokens=16,
                                 temperature=1.5, extra_body={"top_k": 1}).choices[0].text
    assert k1 == greedy
