"""POST /v1/embeddings with the real all-MiniLM-L6-v2 and the official
`openai` client (max_retries=0): single and batch inputs, token-id inputs,
float and base64 equal bit for bit, usage, the 256-token window, every bad
input → 400 naming the field, the model list (/v1/models, wrong model type,
unknown model, --no-embedding-model, a YAML entry with mode: embedding),
concurrent requests, a client that goes away, and the /metrics counters."""
import base64
import concurrent.futures
import json
import socket
import time

import httpx
import numpy as np
import openai
import pytest

from serverutil import SLOW, Server, metrics, request, wait_for

EMB = "all-MiniLM-L6-v2"
TEXTS = ["How do I reset my password?",
         "I forgot my password, how can I change it?",
         "Café crème brûlée — naïve façade",
         "東京は日本の首都です",
         "def f(x): return x ** 2  # 🙂"]


@pytest.fixture(scope="module")
def server(barista_bin, gguf_path, models_dir):
    # no flag: the fetched all-MiniLM-L6-v2 under $BARISTA_MODELS joins by default
    s = Server(barista_bin, gguf_path, env={"BARISTA_MODELS": str(models_dir)})
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=60 * SLOW,
                         max_retries=0)


def chat_name(gguf_path):
    return gguf_path.rsplit("/", 1)[-1][:-len(".gguf")]


def post(server, body, path="/v1/embeddings"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    status, _, raw = request(server, "POST", path, data)
    return status, json.loads(raw)


def vec(client, text, **kw):
    r = client.embeddings.create(model=EMB, input=text, encoding_format="float", **kw)
    return np.array(r.data[0].embedding, dtype=np.float32), r.usage.prompt_tokens


def test_single(client):
    r = client.embeddings.create(model=EMB, input=TEXTS[0], encoding_format="float")
    assert r.object == "list" and r.model == EMB
    assert len(r.data) == 1 and r.data[0].index == 0 and r.data[0].object == "embedding"
    v = np.array(r.data[0].embedding)
    assert v.shape == (384,)
    assert abs(np.linalg.norm(v) - 1) < 1e-4
    # "How do I reset my password?" → [CLS] how do i reset my password ? [SEP]
    assert r.usage.prompt_tokens == 9
    assert r.usage.total_tokens == r.usage.prompt_tokens


def test_batch_equals_singles(client):
    r = client.embeddings.create(model=EMB, input=TEXTS, encoding_format="float")
    assert [d.index for d in r.data] == list(range(len(TEXTS)))
    total = 0
    for i, t in enumerate(TEXTS):
        one, n = vec(client, t)
        total += n
        b = np.array(r.data[i].embedding, dtype=np.float32)
        assert float(one @ b) > 0.99999, t
    assert r.usage.prompt_tokens == total
    # paraphrases are closer than unrelated texts
    e = [np.array(d.embedding) for d in r.data]
    assert e[0] @ e[1] > 0.6 and e[0] @ e[3] < 0.3


def test_base64_equals_float(client, server):
    f = client.embeddings.create(model=EMB, input=TEXTS[:3], encoding_format="float")
    # the official client's default asks for base64 and decodes it itself
    d = client.embeddings.create(model=EMB, input=TEXTS[:3])
    status, raw = post(server, {"model": EMB, "input": TEXTS[:3], "encoding_format": "base64"})
    assert status == 200
    for i in range(3):
        want = np.array(f.data[i].embedding, dtype=np.float32)
        got = np.frombuffer(base64.b64decode(raw["data"][i]["embedding"]), dtype="<f4")
        assert got.shape == (384,)
        assert np.array_equal(got, want)  # bit for bit: 9 significant digits round-trip
        assert np.array_equal(np.array(d.data[i].embedding, dtype=np.float32), want)


def test_token_ids(client):
    text, n = vec(client, "hello world")
    assert n == 4
    # [CLS] hello world [SEP] as ids: the same input, the same vector
    r = client.embeddings.create(model=EMB, input=[101, 7592, 2088, 102], encoding_format="float")
    assert r.usage.prompt_tokens == 4
    assert float(np.array(r.data[0].embedding, dtype=np.float32) @ text) > 0.99999
    r = client.embeddings.create(model=EMB, input=[[101, 7592, 2088, 102], [101, 7592, 102]],
                                 encoding_format="float")
    assert len(r.data) == 2 and r.usage.prompt_tokens == 7


def test_truncation_256(client):
    # "hello" is one wordpiece: 600 of them are cut to [CLS] + 254 + [SEP]
    long, n_long = vec(client, "hello " * 600)
    cut, n_cut = vec(client, "hello " * 254)
    short, n_short = vec(client, "hello " * 200)
    assert n_long == 256 and n_cut == 256 and n_short == 202
    assert float(long @ cut) > 0.99999
    # a 1,000-word text counts the window, not its length
    words = " ".join(f"word{i % 50} is here" for i in range(350))
    _, n = vec(client, words)
    assert n == 256


BAD = [
    ({"model": EMB}, "input", "Missing required parameter"),
    ({"model": EMB, "input": ""}, "input", "empty"),
    ({"model": EMB, "input": []}, "input", "empty"),
    ({"model": EMB, "input": ["a", ""]}, "input", "input[1]"),
    ({"model": EMB, "input": ["x"] * 2049}, "input", "at most 2048"),
    ({"model": EMB, "input": ["a", 5]}, "input", "input[1]"),
    ({"model": EMB, "input": ["a", None]}, "input", "input[1]"),
    ({"model": EMB, "input": [{"text": "a"}]}, "input", "input[0]"),
    ({"model": EMB, "input": 12}, "input", "Invalid type"),
    ({"model": EMB, "input": [1, 2.5]}, "input", "token id"),
    ({"model": EMB, "input": [-3]}, "input", "token id"),
    ({"model": EMB, "input": [[101], ["a"]]}, "input", "input[1][0]"),
    ({"model": EMB, "input": [[101], []]}, "input", "input[1]"),
    ({"model": EMB, "input": [1 << 31]}, "input", "token id"),
    ({"model": EMB, "input": [999999]}, "input", ""),  # outside the vocabulary: the backend's 400
    ({"model": EMB, "input": "a", "encoding_format": "int8"}, "encoding_format", "'float'"),
    ({"model": EMB, "input": "a", "dimensions": 512}, "dimensions", "384"),
    ({"model": EMB, "input": "a", "dimensions": 0}, "dimensions", ""),
    ({"model": EMB, "input": "a", "stream": True}, "stream", "stream"),
    ({"model": EMB, "input": "a", "user": 3}, "user", ""),
    ({"model": 7, "input": "a"}, "model", ""),
]


@pytest.mark.parametrize("body,param,text", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_400(server, body, param, text):
    status, j = post(server, body)
    assert status == 400, j
    assert j["error"]["param"] == param and j["error"]["type"] == "invalid_request_error"
    assert text in j["error"]["message"]


def test_bad_input_official_client(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.embeddings.create(model=EMB, input="")
    assert ei.value.param == "input"
    with pytest.raises(openai.BadRequestError) as ei:
        client.embeddings.create(model=EMB, input="a", dimensions=256)
    assert ei.value.param == "dimensions"
    r = client.embeddings.create(model=EMB, input="a", dimensions=384, user="u-1")
    assert len(r.data[0].embedding) == 384


def test_bad_json_and_body_limit(server):
    status, j = post(server, b'{"input": "a"')
    assert status == 400 and j["error"]["code"] == "invalid_json"
    # over --max-body-bytes (1 MiB): the transport's 413, in OpenAI's error shape
    status, j = post(server, {"model": EMB, "input": "a" * (1 << 20)})
    assert status == 413 and j["error"]["code"] == "request_too_large"


def test_models_and_routing(client, server, gguf_path):
    ids = {m.id: m for m in client.models.list().data}
    assert EMB in ids and chat_name(gguf_path) in ids and "default" in ids
    status, j = (lambda s: (s[0], json.loads(s[2])))(request(server, "GET", f"/v1/models/{EMB}"))
    assert status == 200 and j["meta"]["mode"] == "embedding"
    # model omitted → the default embedding model
    status, j = post(server, {"input": "hello"})
    assert status == 200 and j["model"] == EMB and len(j["data"][0]["embedding"]) == 384
    # a chat model on /v1/embeddings, the embedding model on chat: 400 naming model
    with pytest.raises(openai.BadRequestError) as ei:
        client.embeddings.create(model=chat_name(gguf_path), input="a")
    assert ei.value.param == "model" and EMB in str(ei.value)
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=EMB, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=2)
    assert ei.value.param == "model" and "/v1/embeddings" in str(ei.value)
    with pytest.raises(openai.BadRequestError) as ei:
        client.completions.create(model=EMB, prompt="hi", max_tokens=2)
    assert ei.value.param == "model"
    with pytest.raises(openai.NotFoundError) as ei:
        client.embeddings.create(model="no-such-model", input="a")
    assert ei.value.code == "model_not_found"


def test_concurrent(client):
    texts = [f"Sentence number {i} about {w}." for i, w in
             enumerate(["cats", "dogs", "rain", "tea", "trains", "C code", "jazz", "snow",
                        "chess", "bread"])]
    singles = [vec(client, t)[0] for t in texts]
    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        got = list(ex.map(lambda t: vec(client, t)[0], texts))
    for t, a, b in zip(texts, singles, got):
        assert float(a @ b) > 0.99999, t


def test_disconnect_and_metrics(server, client):
    m0 = metrics(server)
    vec(client, "a repeated text for the feature cache")
    vec(client, "a repeated text for the feature cache")
    m1 = metrics(server)
    key = 'barista_embeddings_requests_total{result="ok"}'
    assert m1[key] - m0.get(key, 0) == 2
    assert m1["barista_embeddings_inputs_total"] - m0.get("barista_embeddings_inputs_total", 0) == 2
    assert m1["barista_embeddings_tokens_total"] > m0.get("barista_embeddings_tokens_total", 0)
    hits = 'barista_feature_cache_hits_total{cache="embedding"}'
    assert m1[hits] - m0.get(hits, 0) >= 1
    assert m1['barista_requests_total{endpoint="embeddings",code="200"}'] >= 2
    # a big batch whose client leaves at once: cancelled, the server goes on
    body = json.dumps({"model": EMB, "input": [f"text {i} " * 40 for i in range(2048)]}).encode()
    assert len(body) < 1 << 20
    s = socket.create_connection((server.host, server.port))
    s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    time.sleep(0.3)
    s.close()
    key = 'barista_embeddings_requests_total{result="cancelled"}'
    deadline = time.time() + 20 * SLOW
    while time.time() < deadline and metrics(server).get(key, 0) <= m1.get(key, 0):
        time.sleep(0.1)
    assert metrics(server)[key] == m1.get(key, 0) + 1
    assert metrics(server)["barista_embeddings_in_flight"] == 0
    assert vec(client, "still serving")[0].shape == (384,)


def test_no_embedding_model(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path, args=["--no-embedding-model"])
    try:
        status, j = post(s, {"input": "a"})
        assert status == 404 and j["error"]["code"] == "model_not_found"
        assert "--embedding-model" in j["error"]["message"]
        status, _, raw = request(s, "GET", "/v1/models")
        assert EMB not in [m["id"] for m in json.loads(raw)["data"]]
    finally:
        assert s.stop() == 0


def test_yaml_entry(barista_bin, gguf_path, models_dir, tmp_path):
    f = tmp_path / "models.yaml"
    f.write_text("model_list:\n"
                 "  - model_name: mini\n"
                 "    litellm_params:\n"
                 f"      model: local/{models_dir / EMB}\n"
                 "      threads: 1\n"
                 "    model_info:\n"
                 "      mode: embedding\n")
    s = Server(barista_bin, gguf_path, args=["--models", str(f)])
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", timeout=60 * SLOW, max_retries=0)
        r = c.embeddings.create(model="mini", input="hello world")
        assert r.model == "mini" and r.usage.prompt_tokens == 4
        ids = [m.id for m in c.models.list().data]
        assert "mini" in ids and EMB not in ids  # the list has one: no default added
    finally:
        assert s.stop() == 0


def test_embedding_model_flag(barista_bin, gguf_path, models_dir):
    # NAME=PATH, PATH naming the weights file inside the folder
    s = Server(barista_bin, gguf_path,
               args=["--embedding-model", f"mini2={models_dir / EMB / 'model.safetensors'}"])
    try:
        status, j = post(s, {"input": ["a", "b"]})
        assert status == 200 and j["model"] == "mini2" and len(j["data"]) == 2
        status, _, raw = request(s, "GET", "/v1/models/mini2")
        assert status == 200 and json.loads(raw)["meta"]["dimensions"] == 384
    finally:
        assert s.stop() == 0


def test_usage_equals_hf_tokenizers(client, models_dir):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(models_dir / EMB / "tokenizer.json"))
    tok.no_padding()  # the file pads to 128: never counted
    tok.enable_truncation(256)
    texts = TEXTS + ["", " ", "x" * 3000, "Ünïcödé ÀÉÎ straße", "hello " * 400,
                     "naïve résumé of 10,000 e-mails; ok?!", "\u00e9\u0301", "日本語のテキスト" * 40]
    texts = [t for t in texts if t]  # "" is refused; whitespace only is [CLS] [SEP]
    want = [len(tok.encode(t).ids) for t in texts]
    r = client.embeddings.create(model=EMB, input=texts, encoding_format="float")
    assert r.usage.prompt_tokens == sum(want)
    for t, n in zip(texts, want):
        assert vec(client, t)[1] == n, t


def test_shutdown_cancels_waiting_request(barista_bin, gguf_path, models_dir):
    s = Server(barista_bin, gguf_path, args=["--shutdown-grace-ms", "100"],
               env={"BARISTA_MODELS": str(models_dir)})
    body = json.dumps({"model": EMB, "input": [f"text {i} " * 40 for i in range(2048)]}).encode()
    c = s.connect()
    c.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    wait_for(lambda: metrics(s)["barista_embeddings_in_flight"] == 1)
    s.signal()
    status, _, raw = c.recv_response(timeout=30)
    c.close()
    # the grace period (100 ms) ends long before 2048 long inputs are encoded
    assert status == 503 and json.loads(raw)["error"]["code"] == "shutting_down"
    assert s.wait(30) == 0
