"""Structured outputs and tool calls with the official openai client
(docs/API.md, "Structured outputs" and "Tools"): outputs constrained by a
JSON Schema parse and validate (the jsonschema package), forced tool calls
carry arguments that validate against the function's parameters, a tool
round trip works, streamed tool calls reassemble to the non-streamed ones
(live and replayed from the cache), and bad schemas or tools get a 400 that
names them. bench/structured runs the 50 prompts x 3 schemas of issue 17."""
import concurrent.futures
import json

import jsonschema
import openai
import pytest

from serverutil import SLOW, Server

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string"},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}

ORDER = {  # nested: $defs, arrays with bounds, enums, anyOf, optional keys
    "type": "object",
    "properties": {
        "customer": {"$ref": "#/$defs/customer"},
        "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1,
                  "maxItems": 3},
        "status": {"enum": ["new", "paid", "shipped"]},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["customer", "items", "status", "note"],
    "additionalProperties": False,
    "$defs": {
        "customer": {"type": "object",
                     "properties": {"name": {"type": "string"}, "vip": {"type": "boolean"}},
                     "required": ["name", "vip"], "additionalProperties": False},
        "item": {"type": "object",
                 "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"},
                                "price": {"type": "number"}},
                 "required": ["sku", "qty", "price"], "additionalProperties": False},
    },
}

TRIAGE = {
    "type": "object",
    "properties": {
        "category": {"enum": ["bug", "feature", "question"]},
        "priority": {"type": "integer"},
        "labels": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "duplicate": {"type": "boolean"},
    },
    "required": ["category", "priority", "labels", "duplicate"],
    "additionalProperties": False,
}

SCHEMAS = {"person": PERSON, "order": ORDER, "triage": TRIAGE}
PROMPTS = {
    "person": ["Describe a fictional person as JSON.", "Alice is 31 and lives in Oslo.",
               "Make up a character from Rome."],
    "order": ["Create an order for two coffees.", "A VIP buys one book, already paid.",
              "Order: 3 pencils, shipped."],
    "triage": ["The app crashes when I click save.", "Please add dark mode.",
               "How do I reset my password?"],
}

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string"},
                                  "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the local time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                   "required": ["zone"], "additionalProperties": False}}}
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--parallel", "4"])
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", timeout=120 * SLOW,
                         max_retries=0)


def fmt(name, schema):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema,
                                                   "strict": True}}


def test_schemas_validate(client, sanitized):
    # the sanitizer build checks the mechanism on one prompt per schema; the
    # 150-output validity figure is bench/structured's
    per = 1 if sanitized else len(PROMPTS["person"])
    jobs = [(n, p, i) for n in SCHEMAS for i, p in enumerate(PROMPTS[n][:per])]

    def run(job):
        name, prompt, _ = job
        r = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": prompt}],
            response_format=fmt(name, SCHEMAS[name]), max_tokens=256, temperature=0)
        return name, r.choices[0]

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        for name, choice in ex.map(run, jobs):
            assert choice.finish_reason == "stop", choice.message.content
            jsonschema.validate(json.loads(choice.message.content), SCHEMAS[name])


def test_json_object_and_completions(client):
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "List two fruits as JSON."}],
        response_format={"type": "json_object"}, max_tokens=128, temperature=0)
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length")
    if c.finish_reason == "stop":
        assert isinstance(json.loads(c.message.content), dict)
    else:  # cut by max_tokens: still a prefix of a JSON object
        assert c.message.content.startswith("{")
    # /v1/completions takes response_format too
    r = client.completions.create(model="default", prompt="Person:", max_tokens=128,
                                  temperature=0,
                                  extra_body={"response_format": fmt("person", PERSON)})
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].text), PERSON)


def test_max_tokens_cut_is_length(client):
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "A person."}],
        response_format=fmt("person", PERSON), max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


STORY = {"type": "object", "properties": {"story": {"type": "string"}},
         "required": ["story"], "additionalProperties": False}


@pytest.mark.parametrize("name,schema,max_tokens", [("story", STORY, 24), ("story", STORY, 12),
                                                    ("person", PERSON, 40)])
def test_small_budget_still_closes(client, name, schema, max_tokens):
    # a free string would run into max_tokens mid-JSON; the budget-aware
    # mask closes the text in time, so it parses, validates and says "stop"
    r = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Tell me a very long story about a dragon."}],
        response_format=fmt(name, schema), max_tokens=max_tokens, temperature=0)
    c = r.choices[0]
    jsonschema.validate(json.loads(c.message.content), schema)
    assert c.finish_reason == "stop"
    assert r.usage.completion_tokens <= max_tokens
    # streamed, the same text
    chunks = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Tell me a very long story about a dragon."}],
        response_format=fmt(name, schema), max_tokens=max_tokens, temperature=0, stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == c.message.content


@pytest.mark.parametrize("choice", ["required", "named"])
def test_forced_tool_calls_validate(client, choice):
    tc = "required" if choice == "required" else {"type": "function",
                                                  "function": {"name": "get_time"}}
    for seed, q in enumerate(["What's the weather in Paris and the time in Tokyo?"]):
        r = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": q}], tools=[WEATHER, TIME],
            tool_choice=tc, max_tokens=128, temperature=0.7, seed=seed,
            # OpenAI's truncation, explicit: the model's sampling defaults (top_k 40,
            # top_p 0.95, min_p 0.05) would pick other tokens from this seed, and the
            # 135M model can loop inside a string until max_tokens
            top_p=1, extra_body={"top_k": 0, "min_p": 0})
        c = r.choices[0]
        assert c.finish_reason == "tool_calls"
        assert c.message.content is None and c.message.tool_calls
        for call in c.message.tool_calls:
            assert call.id.startswith("call_") and call.type == "function"
            if choice == "named":
                assert call.function.name == "get_time"
            jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])


def test_tool_round_trip(client):
    msgs = [{"role": "user", "content": "What's the weather in Paris?"}]
    r = client.chat.completions.create(model="default", messages=msgs, tools=[WEATHER],
                                       tool_choice="required", max_tokens=128, temperature=0)
    call = r.choices[0].message.tool_calls[0]
    msgs.append(r.choices[0].message.model_dump(exclude_none=True))
    msgs.append({"role": "tool", "tool_call_id": call.id,
                 "content": json.dumps({"temperature": 21, "sky": "sunny"})})
    r2 = client.chat.completions.create(model="default", messages=msgs, tools=[WEATHER],
                                        tool_choice="none", max_tokens=40, temperature=0)
    assert r2.choices[0].message.content
    assert r2.choices[0].message.tool_calls is None
    assert r2.choices[0].finish_reason in ("stop", "length")
    # the call and its result are in the prompt
    base = client.chat.completions.create(model="default", messages=msgs[:1], tools=[WEATHER],
                                          tool_choice="none", max_tokens=1)
    assert r2.usage.prompt_tokens > base.usage.prompt_tokens + 20


def reassemble(stream):
    calls, finish = {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        ch = chunk.choices[0]
        finish = ch.finish_reason or finish
        assert not ch.delta.content
        for d in ch.delta.tool_calls or []:
            if d.id:
                assert d.index not in calls
                calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
            calls[d.index]["arguments"] += d.function.arguments or ""
    return [(c["name"], c["arguments"]) for _, c in sorted(calls.items())], finish


def test_streamed_tool_calls_equal_non_streamed(client):
    def ask(seed, stream):
        kw = dict(model="default", tools=[WEATHER, TIME], tool_choice="required",
                  messages=[{"role": "user", "content": "Weather in Oslo and time in Lima?"}],
                  max_tokens=160, temperature=0.8, seed=seed)
        raw = client.chat.completions.with_raw_response.create(stream=stream, **kw)
        r = raw.parse()
        if stream:
            calls, fin = reassemble(r)
        else:
            fin = r.choices[0].finish_reason
            calls = [(c.function.name, c.function.arguments)
                     for c in r.choices[0].message.tool_calls]
        return raw.headers.get("x-cache"), calls, fin

    # live JSON, then the cache's replays as a stream and as JSON
    live = ask(1, False)
    assert live[0] == "MISS" and live[2] == "tool_calls"
    assert ask(1, True) == ("HIT", live[1], "tool_calls")
    assert ask(1, False) == ("HIT", live[1], "tool_calls")
    # live stream, then the cache's JSON replay
    s = ask(2, True)
    assert s[0] == "MISS" and s[2] == "tool_calls"
    assert ask(2, False) == ("HIT", s[1], "tool_calls")


def test_forced_tool_calls_stream_live(client):
    """A forced call is streamed while it is generated: its head (index, id,
    type, name) long before the end, then its arguments token by token (not
    the 24-byte split of a replay), reassembling to the non-streamed call."""
    import time
    kw = dict(model="default", tools=[WEATHER], tool_choice="required",
              messages=[{"role": "user", "content": "Weather in Reykjavik, in celsius?"}],
              max_tokens=96, temperature=0, extra_headers={"Cache-Control": "no-store"})
    t0 = time.monotonic()
    stamps, frags = [], []
    calls = {}
    for chunk in client.chat.completions.create(stream=True, **kw):
        now = time.monotonic()
        if not chunk.choices:
            continue
        ch = chunk.choices[0]
        for d in ch.delta.tool_calls or []:
            if d.id:
                assert d.type == "function" and d.function.name == "get_weather"
                assert d.function.arguments == ""
                calls[d.index] = ""
                stamps.append(("head", now))
            elif d.function.arguments:
                frags.append(d.function.arguments)
                calls[d.index] += d.function.arguments
                stamps.append(("args", now))
        if ch.finish_reason:
            assert ch.finish_reason == "tool_calls"
            stamps.append(("end", now))
    assert [k for k, _ in stamps][0] == "head" and stamps[-1][0] == "end"
    t_head, t_end = stamps[0][1], stamps[-1][1]
    # the head came out while the arguments were still being generated
    assert t_end - t_head > 0.25 * (t_end - t0), (t_head - t0, t_end - t0)
    # fragments are what each step produced, not a fixed split of the whole
    assert len(frags) >= 4 and any(len(f) != 24 for f in frags[:-1])
    r = client.chat.completions.create(**kw)
    call = r.choices[0].message.tool_calls[0]
    assert [(call.function.name, call.function.arguments)] == [("get_weather", calls[0])]
    jsonschema.validate(json.loads(calls[0]), PARAMS["get_weather"])


def test_n_choices_each_constrained(client):
    """n > 1 with response_format: every choice is constrained (its own grammar
    state from the fork on) and equals the single request with seed + i."""
    msgs = [{"role": "user", "content": "Describe a person."}]
    kw = dict(model="default", messages=msgs, response_format=fmt("person", PERSON),
              max_tokens=256, temperature=0.9)
    r = client.chat.completions.create(n=3, seed=7, **kw)
    assert [c.index for c in r.choices] == [0, 1, 2]
    for c in r.choices:
        assert c.finish_reason == "stop", c.message.content
        jsonschema.validate(json.loads(c.message.content), PERSON)
    for i in range(3):
        one = client.chat.completions.create(seed=7 + i, **kw).choices[0]
        assert one.message.content == r.choices[i].message.content
    # streamed: the chunks carry their choice's index and each choice reassembles
    texts = ["", "", ""]
    for ch in client.chat.completions.create(n=3, seed=7, stream=True, **kw):
        for c in ch.choices:
            texts[c.index] += c.delta.content or ""
    assert texts == [c.message.content for c in r.choices]


def test_n_with_tools_is_a_400_naming_n(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Time in Tokyo?"}],
            tools=[TIME], n=2, max_tokens=8)
    assert ei.value.body["param"] == "n"
    assert "tools" in ei.value.body["message"]


BAD = [
    ({"response_format": fmt("s", {"type": "string", "pattern": "^a"})},
     "response_format.json_schema.schema", "pattern"),
    ({"response_format": fmt("s", {"type": 5})}, "response_format.json_schema.schema", "type"),
    ({"response_format": fmt("s", {"$ref": "#/$defs/missing"})},
     "response_format.json_schema.schema", "missing"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "yaml"),
    ({"tools": [{"type": "function", "function": {"parameters": {}}}]},
     "tools[0].function.name", "name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice", "nope"),
    ({"tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {
            "x": {"type": "string", "format": "email"}}}}}]},
     "tools[0].function.parameters", "format"),
]


@pytest.mark.parametrize("extra,param,word", BAD)
def test_bad_schemas_and_tools(client, extra, param, word):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="default",
                                       messages=[{"role": "user", "content": "x"}],
                                       max_tokens=4, extra_body=extra)
    err = ei.value.body
    assert err["param"] == param
    assert word in err["message"]


def test_langchain(server):
    """LangChain's ChatOpenAI, unchanged: with_structured_output (json_schema and
    function_calling) and bind_tools."""
    lc = pytest.importorskip("langchain_openai")
    from typing import Literal

    from langchain_core.tools import tool
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int
        mood: Literal["happy", "sad"]

    @tool
    def get_weather(city: str) -> str:
        """Get the weather for a city."""
        return "sunny"

    llm = lc.ChatOpenAI(base_url=server.url + "/v1", api_key="x", model="default",
                        temperature=0, max_tokens=128, max_retries=0, timeout=120 * SLOW)
    for method in ("json_schema", "function_calling"):
        p = llm.with_structured_output(Person, method=method).invoke(
            "Alice is 30 and happy. Extract the person.")
        assert isinstance(p, Person)
    m = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Paris?")
    assert m.tool_calls and m.tool_calls[0]["name"] == "get_weather"
    assert isinstance(m.tool_calls[0]["args"]["city"], str)
