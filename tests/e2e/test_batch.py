"""Files + Batch API and Prefer: respond-async (issue 13, items 3 and 4),
driven with the official openai client (max_retries=0) against the real
binary: upload a JSONL, run a batch to completion, download its output;
SIGKILL mid-batch and resume; cancel; one owner cannot see another's files
or batches; bad input answers OpenAI-style 4xx."""
import hashlib
import io
import json
import signal
import time

import httpx
import openai
import pytest

from serverutil import SLOW, Server, metrics

TERMINAL = ("completed", "failed", "expired", "cancelled")


def client(server, key="tenant-a"):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0,
                         timeout=60 * SLOW)


def jsonl(lines):
    return ("\n".join(json.dumps(x) for x in lines) + "\n").encode()


def chat_line(i, prompt, max_tokens=4):
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "default", "max_tokens": max_tokens, "temperature": 0,
                     "messages": [{"role": "user", "content": prompt}]}}


def upload(c, data, name="in.jsonl"):
    return c.files.create(file=(name, io.BytesIO(data)), purpose="batch")


def wait_batch(c, bid, until=TERMINAL, timeout=300):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        b = c.batches.retrieve(bid)
        if b.status in until:
            return b
        time.sleep(0.1)
    raise AssertionError(f"batch {bid} still {b.status}: {b.request_counts}")


def output_lines(c, file_id):
    text = c.files.content(file_id).read().decode()
    return [json.loads(x) for x in text.splitlines() if x.strip()]


@pytest.fixture(scope="module")
def srv(barista_bin, gguf_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    s = Server(barista_bin, gguf_path, args=["--data-dir", str(d), "--parallel", "4"])
    yield s
    assert s.stop() == 0


def test_batch_of_200_lines_runs_to_completion(srv):
    c = client(srv)
    # 5 distinct prompts, each 40 times: a warm cache answers most lines
    lines = [chat_line(i, f"Say the number {i % 5}.") for i in range(200)]
    f = upload(c, jsonl(lines))
    assert f.object == "file" and f.purpose == "batch" and f.bytes > 0
    assert c.files.retrieve(f.id).filename == "in.jsonl"
    assert f.id in [x.id for x in c.files.list()]
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                         completion_window="24h", metadata={"job": "e2e"})
    assert b.status in ("validating", "in_progress") and b.metadata == {"job": "e2e"}
    b = wait_batch(c, b.id)
    assert b.status == "completed", b
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == \
        (200, 200, 0)
    assert b.in_progress_at and b.finalizing_at and b.completed_at and b.output_file_id
    assert b.error_file_id is None
    out = output_lines(c, b.output_file_id)
    ids = [x["custom_id"] for x in out]
    assert sorted(ids) == sorted(x["custom_id"] for x in lines)  # each exactly once
    one = out[0]
    assert one["error"] is None and one["response"]["status_code"] == 200
    assert one["response"]["body"]["object"] == "chat.completion"
    assert one["id"].startswith("batch_req_")
    assert c.files.retrieve(b.output_file_id).purpose == "batch_output"
    assert b.id in [x.id for x in c.batches.list(limit=100)]
    m = metrics(srv)
    assert m['barista_batch_lines_total{result="completed"}'] >= 200
    assert m["barista_batch_lines_running"] == 0


def test_malformed_lines_go_to_the_error_file(srv):
    c = client(srv)
    data = jsonl([chat_line(0, "Hi"), chat_line(1, "Hello")]) + b"this is not json\n" + \
        jsonl([{"custom_id": "wrong-url", "method": "POST", "url": "/v1/embeddings",
                "body": {"input": "x"}}, chat_line(0, "duplicate id")])
    f = upload(c, data)
    b = wait_batch(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                       completion_window="24h").id)
    assert b.status == "completed"
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == \
        (5, 2, 3)
    errs = output_lines(c, b.error_file_id)
    codes = sorted(e["error"]["code"] for e in errs)
    assert codes == ["duplicate_custom_id", "invalid_json_line", "invalid_url"]
    assert all(e["response"] is None for e in errs)
    assert sorted(x["custom_id"] for x in output_lines(c, b.output_file_id)) == ["req-0", "req-1"]


def test_bad_requests_get_openai_errors(srv):
    c = client(srv)
    f = upload(c, jsonl([chat_line(0, "Hi")]))
    with pytest.raises(openai.BadRequestError) as e:
        c.batches.create(input_file_id=f.id, endpoint="/v1/images", completion_window="24h")
    assert e.value.body["code"] == "invalid_value" and e.value.body["param"] == "endpoint"
    r = httpx.post(srv.url + "/v1/batches", json={"endpoint": "/v1/chat/completions",
                                                 "completion_window": "24h"},
                   headers={"Authorization": "Bearer tenant-a"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "missing_required_parameter"
    assert r.json()["error"]["param"] == "input_file_id"
    with pytest.raises(openai.NotFoundError):
        c.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                         completion_window="24h")
    # malformed multipart: no closing boundary, wrong content type, wrong purpose
    h = {"Authorization": "Bearer tenant-a"}
    r = httpx.post(srv.url + "/v1/files", content=b"--xyz\r\nContent-Disposition: form-data; "
                   b"name=\"purpose\"\r\n\r\nbatch\r\n",
                   headers={**h, "Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_multipart"
    r = httpx.post(srv.url + "/v1/files", content=b"{}", headers={**h, "Content-Type":
                                                                 "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_multipart"
    r = httpx.post(srv.url + "/v1/files", headers=h, data={"purpose": "fine-tune"},
                   files={"file": ("a.jsonl", b"{}\n")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = httpx.post(srv.url + "/v1/files", headers=h, data={"purpose": "batch"})
    assert r.status_code == 400
    r = httpx.get(srv.url + f"/v1/batches/x/{f.id}", headers=h)
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(srv.url + f"/v1/files/{f.id}/bogus", headers=h)
    assert r.status_code == 404 and "/v1/files/{id}/content" in r.json()["error"]["message"]
    r = httpx.post(srv.url + "/v1/batches/batch_x/cancelled", headers=h)
    assert r.status_code == 404 and "/v1/batches/{id}/cancel" in r.json()["error"]["message"]
    with pytest.raises(openai.ConflictError):
        b = wait_batch(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                           completion_window="24h").id)
        c.batches.cancel(b.id)


def test_another_owner_sees_nothing(srv):
    a, b = client(srv, "tenant-a"), client(srv, "tenant-b")
    f = upload(a, jsonl([chat_line(0, "Hi")]))
    batch = a.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                             completion_window="24h")
    for call in (lambda: b.files.retrieve(f.id), lambda: b.files.content(f.id),
                 lambda: b.files.delete(f.id), lambda: b.batches.retrieve(batch.id),
                 lambda: b.batches.cancel(batch.id),
                 lambda: b.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                          completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert f.id not in [x.id for x in b.files.list()]
    assert batch.id not in [x.id for x in b.batches.list()]
    wait_batch(a, batch.id)
    assert a.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        a.files.retrieve(f.id)


def test_owner_is_the_tenant_under_a_keys_file(barista_bin, gguf_path, tmp_path):
    """With --keys the owner is the tenant, not the key: a second key of the
    same tenant sees its files and batches, another tenant sees nothing, and
    the batch's lines run as the tenant (their keys are checked)."""
    keys = {n: f"sk-batch-{n}-0123456789" for n in ("a1", "a2", "b")}
    sha = {n: hashlib.sha256(k.encode()).hexdigest() for n, k in keys.items()}
    kf = tmp_path / "keys.yaml"
    kf.write_text(f"""keys:
  - {{key_sha256: {sha['a1']}, tenant: team-a}}
  - {{key_sha256: {sha['a2']}, tenant: team-a}}
  - {{key_sha256: {sha['b']}, tenant: team-b}}
""")
    s = Server(barista_bin, gguf_path,
               args=["--data-dir", str(tmp_path / "d"), "--keys", str(kf)])
    try:
        a1, a2, b = (client(s, keys[n]) for n in ("a1", "a2", "b"))
        with pytest.raises(openai.AuthenticationError):
            client(s, "sk-unknown").files.list()
        f = upload(a1, jsonl([chat_line(i, f"Say {i}") for i in range(2)]))
        batch = a2.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
        with pytest.raises(openai.NotFoundError):
            b.batches.retrieve(batch.id)
        assert f.id not in [x.id for x in b.files.list()]
        done = wait_batch(a1, batch.id)
        assert done.status == "completed", done
        assert done.request_counts.completed == 2
        rows = output_lines(a2, done.output_file_id)
        assert sorted(r["custom_id"] for r in rows) == ["req-0", "req-1"]
        assert all(r["response"]["status_code"] == 200 for r in rows)
    finally:
        assert s.stop() == 0


def test_cancel(srv):
    c = client(srv)
    lines = [chat_line(i, f"Write a long poem about the number {i}.", 48) for i in range(40)]
    b = c.batches.create(input_file_id=upload(c, jsonl(lines)).id,
                         endpoint="/v1/chat/completions", completion_window="24h")
    wait_batch(c, b.id, until=("in_progress",))
    x = c.batches.cancel(b.id)
    assert x.status in ("cancelling", "cancelled") and x.cancelling_at
    x = wait_batch(c, b.id)
    assert x.status == "cancelled" and x.cancelled_at
    assert x.request_counts.completed < 40
    if x.output_file_id:
        assert len(output_lines(c, x.output_file_id)) == x.request_counts.completed


def test_respond_async_round_trip(srv):
    h = {"Authorization": "Bearer tenant-a", "Prefer": "respond-async"}
    body = {"model": "default", "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hi."}]}
    r = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=h)
    assert r.status_code == 202 and r.headers["preference-applied"] == "respond-async"
    loc = r.headers["location"]
    assert loc.startswith("/v1/async/") and r.json()["status"] == "in_progress"
    other = httpx.get(srv.url + loc, headers={"Authorization": "Bearer tenant-b"})
    assert other.status_code == 404
    deadline = time.time() + 60 * SLOW
    while True:
        g = httpx.get(srv.url + loc, headers={"Authorization": "Bearer tenant-a"})
        if g.status_code != 202:
            break
        assert g.headers["retry-after"]
        assert time.time() < deadline
        time.sleep(0.05)
    assert g.status_code == 200 and g.json()["object"] == "chat.completion"
    # the official client, asking for the raw response
    raw = client(srv).chat.completions.with_raw_response.create(
        model="default", max_tokens=4, temperature=0,
        messages=[{"role": "user", "content": "Say hi."}], extra_headers={"Prefer": "respond-async"})
    assert raw.status_code == 202 and raw.headers["location"].startswith("/v1/async/async-")
    # a bad request is answered asynchronously with its own 4xx
    r = httpx.post(srv.url + "/v1/chat/completions", json={"model": "default"}, headers=h)
    assert r.status_code == 202
    loc = r.headers["location"]
    while (g := httpx.get(srv.url + loc, headers=h)).status_code == 202:
        time.sleep(0.05)
    assert g.status_code == 400 and g.json()["error"]["type"] == "invalid_request_error"


def test_sigkill_mid_batch_then_resume(barista_bin, gguf_path, tmp_path):
    """SIGKILL mid-batch, restart, SIGTERM mid-batch (exit 0), restart: the batch
    completes with every line answered exactly once."""
    args = ["--data-dir", str(tmp_path), "--parallel", "4", "--cache-mem", "0"]
    lines = [chat_line(i, f"Count to {i}.", 3) for i in range(10)]

    def wait_completed(c, bid, n):
        deadline = time.time() + 180 * SLOW
        while (x := c.batches.retrieve(bid)).request_counts.completed < n \
                and x.status not in TERMINAL:
            assert time.time() < deadline
            time.sleep(0.05)
        return x.request_counts.completed

    s = Server(barista_bin, gguf_path, args=args)
    try:
        c = client(s)
        b = c.batches.create(input_file_id=upload(c, jsonl(lines)).id,
                             endpoint="/v1/chat/completions", completion_window="24h")
        wait_completed(c, b.id, 2)
    finally:
        s.signal(signal.SIGKILL)
        s.wait()
    s = Server(barista_bin, gguf_path, args=args)
    try:
        assert "resuming 1 unfinished batch" in s.log
        c = client(s)
        n = c.batches.retrieve(b.id).request_counts.completed
        assert n >= 2
        wait_completed(c, b.id, n + 2)
    finally:
        s.signal(signal.SIGTERM)
        assert s.wait() == 0  # running lines are given up, not waited for
    s = Server(barista_bin, gguf_path, args=args)
    try:
        c = client(s)
        x = wait_batch(c, b.id)
        assert x.status == "completed" and x.request_counts.completed == 10
        ids = [o["custom_id"] for o in output_lines(c, x.output_file_id)]
        assert sorted(ids) == sorted(f"req-{i}" for i in range(10))  # none lost, none doubled
    finally:
        assert s.stop() == 0


def test_off_without_data_dir(barista_bin, gguf_path):
    s = Server(barista_bin, gguf_path)
    try:
        r = httpx.get(s.url + "/v1/batches")
        assert r.status_code == 404 and "--data-dir" in r.json()["error"]["message"]
    finally:
        assert s.stop() == 0


def test_limits_name_themselves(barista_bin, gguf_path, tmp_path):
    s = Server(barista_bin, gguf_path, args=["--data-dir", str(tmp_path),
                                             "--batch-max-file-bytes", "700",
                                             "--batch-max-lines", "2", "--batch-max-files", "2"])
    try:
        c = client(s)
        with pytest.raises(openai.APIStatusError) as e:
            upload(c, b"x" * 701)
        assert e.value.status_code == 413 and e.value.body["code"] == "file_too_large"
        assert "--batch-max-file-bytes" in e.value.body["message"]
        three = upload(c, jsonl([chat_line(i, "Hi", 2) for i in range(3)]))
        with pytest.raises(openai.BadRequestError) as e:
            c.batches.create(input_file_id=three.id, endpoint="/v1/chat/completions",
                             completion_window="24h")
        assert e.value.body["code"] == "batch_too_large"
        assert "--batch-max-lines" in e.value.body["message"]
        upload(c, jsonl([chat_line(0, "Hi", 2)]))
        with pytest.raises(openai.BadRequestError) as e:
            upload(c, jsonl([chat_line(0, "Hi", 2)]))
        assert e.value.body["code"] == "too_many_files"
        assert "--batch-max-files" in e.value.body["message"]
        assert len(client(s, "tenant-b").files.list().data) == 0  # per owner
        upload(client(s, "tenant-b"), jsonl([chat_line(0, "Hi", 2)]))
    finally:
        assert s.stop() == 0
