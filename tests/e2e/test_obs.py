"""Observability end to end (issue 14): X-Request-Id, Server-Timing and the
streamed reply's barista_timings, the JSON access log, /metrics checked by
promtool and scraped by a real Prometheus server, and the dashboard page
driven in headless Chromium (Selenium, the Debian chromedriver)."""
import hashlib
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import zlib

import httpx
import openai
import pytest

from serverutil import SLOW, Server, free_port, request, sse_events, wait_for

ST_RE = re.compile(r"([a-z]+);dur=([0-9.]+)")


def server_timing(h):
    return {k: float(v) for k, v in ST_RE.findall(h.get("server-timing", ""))}


# every /metrics name before issue 14 (docs/API.md at 4ae94f5): kept or aliased
# for one release; the gateway's are checked where a gateway runs
OLD_NAMES = (
    "barista_api_generations", "barista_cache_bytes", "barista_cache_entries",
    "barista_cache_evictions_total", "barista_cache_expirations_total",
    "barista_cache_requests_total", "barista_cached_prompt_tokens_total",
    "barista_cancelled_requests_total", "barista_embedding_batches_total",
    "barista_embedding_encode_seconds_total", "barista_embeddings_in_flight",
    "barista_embeddings_inputs_total", "barista_embeddings_requests_total",
    "barista_embeddings_tokens_total", "barista_engine_active_sequences",
    "barista_engine_queued_requests", "barista_feature_cache_entries",
    "barista_feature_cache_evictions_total", "barista_feature_cache_hits_total",
    "barista_feature_cache_misses_total", "barista_generated_tokens_total",
    "barista_http_connections", "barista_http_output_paused",
    "barista_http_output_paused_total", "barista_http_output_queued_bytes",
    "barista_kv_blocks_cached", "barista_kv_blocks_capacity", "barista_kv_blocks_free",
    "barista_kv_blocks_used", "barista_kv_evictions_total", "barista_model_loaded",
    "barista_models_loaded", "barista_preemptions_total",
    "barista_prefix_cache_hit_tokens_total", "barista_prompt_tokens_total",
    "barista_redis_connected", "barista_redis_errors_total", "barista_rejected_requests_total",
    "barista_request_duration_seconds", "barista_requests_total", "barista_ttft_seconds",
)
OLD_UPSTREAM_NAMES = (
    "barista_upstream_requests_total", "barista_upstream_errors_total",
    "barista_upstream_in_flight", "barista_upstream_ejected", "barista_upstream_ejections_total",
    "barista_upstream_latency_ewma_seconds", "barista_upstream_retries_total",
    "barista_upstream_hedges_total", "barista_upstream_hedge_wins_total",
)


def body(content, **kw):
    b = {"messages": [{"role": "user", "content": content}], "max_tokens": 4, "temperature": 0}
    b.update(kw)
    return json.dumps(b)


@pytest.fixture(scope="module")
def srv(barista_bin, gguf_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("obs") / "access.jsonl"
    s = Server(barista_bin, gguf_path, ["--no-embedding-model", "--access-log", str(log),
                                        "--data-dir", str(tmp_path_factory.mktemp("data"))])
    s.access_log = log
    yield s
    s.stop()


def test_request_id_echoed_generated_or_replaced(srv):
    st, h, _ = request(srv, "GET", "/health", headers={"X-Request-Id": "trace-42.a_b"})
    assert st == 200 and h["x-request-id"] == "trace-42.a_b"
    st, h, _ = request(srv, "GET", "/health")
    gen = h["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", gen)
    st, h2, _ = request(srv, "GET", "/health")
    assert h2["x-request-id"] != gen
    # over 128 bytes, or with a control character / space: replaced, not echoed
    long_id = "x" * 129
    st, h, _ = request(srv, "GET", "/health", headers={"X-Request-Id": long_id})
    assert st == 200 and re.fullmatch(r"[0-9a-f]{32}", h["x-request-id"])
    st, h, _ = request(srv, "GET", "/health", headers={"X-Request-Id": "x" * 128})
    assert h["x-request-id"] == "x" * 128
    # the HTTP parser refuses most control characters itself (400, nothing
    # echoed); a tab gets through it and is replaced here
    st, h, _ = request(srv, "GET", "/health", headers={"X-Request-Id": "a\x01b"})
    assert st == 400 and "a\x01b" not in h.get("x-request-id", "")
    st, h, _ = request(srv, "GET", "/health", headers={"X-Request-Id": "a\tb"})
    assert st == 200 and re.fullmatch(r"[0-9a-f]{32}", h["x-request-id"])
    st, h, _ = request(srv, "GET", "/health", headers={"X-Request-Id": "a b"})
    assert re.fullmatch(r"[0-9a-f]{32}", h["x-request-id"])


def test_server_timing_miss_hit_and_stream(srv):
    st, h, raw = request(srv, "POST", "/v1/chat/completions", body("Name a colour."))
    assert st == 200, raw
    t = server_timing(h)
    for k in ("auth", "parse", "cache", "queue", "prefill", "ttft", "decode", "total"):
        assert k in t, (k, h["server-timing"])
    assert t["ttft"] <= t["total"] and t["decode"] <= t["total"]
    assert t["prefill"] > 0 and "upstream" not in t  # a local model: no upstream part
    st, h, raw = request(srv, "POST", "/v1/chat/completions", body("Name a colour."))
    assert st == 200 and h["x-cache"] == "HIT"
    t = server_timing(h)
    assert "cache" in t and "prefill" not in t and t["total"] < 1000
    # a stream: the head says what was known then; the last chunk has all
    st, h, raw = request(srv, "POST", "/v1/chat/completions",
                         body("Name a fruit.", stream=True,
                              stream_options={"include_usage": True}),
                         headers={"X-Request-Id": "stream-1"})
    assert st == 200 and h["x-request-id"] == "stream-1"
    head = server_timing(h)
    assert "parse" in head and "decode" not in head
    ev = [json.loads(e) for e in sse_events(raw) if e.startswith("{")]
    assert "barista_timings" in ev[-1] and ev[-1]["usage"]["completion_tokens"] > 0
    bt = ev[-1]["barista_timings"]
    assert bt["ttft"] > 0 and bt["decode"] >= 0 and bt["total"] >= bt["ttft"]
    assert all("barista_timings" not in e for e in ev[:-1])
    # n choices: the timings ride on the stream's last chunk all the same
    st, h, raw = request(srv, "POST", "/v1/chat/completions",
                         body("Name a tree.", stream=True, n=2, seed=7, temperature=0.7))
    assert st == 200
    ev = [json.loads(e) for e in sse_events(raw) if e.startswith("{")]
    assert {c["index"] for e in ev for c in e["choices"]} == {0, 1}
    assert "barista_timings" in ev[-1] and ev[-1]["barista_timings"]["total"] > 0
    assert all("barista_timings" not in e for e in ev[:-1])


def test_official_client_reads_timed_stream(srv):
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    s = c.chat.completions.create(model="default", stream=True, max_tokens=4, temperature=0,
                                  messages=[{"role": "user", "content": "Say hi."}])
    chunks = list(s)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    extra = chunks[-1].model_extra or {}
    assert "barista_timings" in extra and extra["barista_timings"]["total"] > 0


def test_access_log_lines(srv):
    request(srv, "GET", "/health", headers={"X-Request-Id": "log-me"})
    st, h, _ = request(srv, "POST", "/v1/chat/completions", body("Count to two."),
                       headers={"X-Request-Id": "log-gen"})
    assert st == 200
    request(srv, "POST", "/v1/chat/completions", "{bad json")

    def lines():
        try:
            return [json.loads(ln) for ln in srv.access_log.read_text().splitlines()]
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    def find(rid):
        return next((x for x in lines() if x["id"] == rid), None)

    assert wait_for(lambda: find("log-gen"))
    g = find("log-gen")
    assert g["status"] == 200 and g["endpoint"] == "chat_completions"
    assert g["model"] and g["cache"] == "MISS" and g["tokens_out"] > 0 and g["tokens_in"] > 0
    assert g["method"] == "POST" and g["path"] == "/v1/chat/completions"
    for k in ("time", "tenant", "fallback", "replica", "bytes", "peer"):
        assert k in g
    assert g["timings_ms"]["total"] >= g["timings_ms"]["ttft"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", g["time"])
    assert find("log-me")["status"] == 200
    # a line is written after the reply's last byte went to the socket: wait for it
    assert wait_for(lambda: any(x["status"] == 400 and x["endpoint"] == "chat_completions"
                                for x in lines()))


def test_access_log_local_request(srv):
    """A request without a socket (Prefer: respond-async, a batch line) gets
    its own line: "local": true, its endpoint, status and timings; an async
    one has the 202's id, and the 202 itself is logged as any reply."""
    st, h, raw = request(srv, "POST", "/v1/chat/completions", body("Say maybe."),
                         headers={"Prefer": "respond-async", "X-Request-Id": "async-obs-1"})
    assert st == 202, raw

    def local_line():
        try:
            return next((x for x in map(json.loads, srv.access_log.read_text().splitlines())
                         if x["id"] == "async-obs-1" and x["local"]), None)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    assert wait_for(local_line)
    ln = local_line()
    assert ln["status"] == 200 and ln["endpoint"] == "chat_completions" and ln["peer"] is None
    assert ln["path"] == "/v1/chat/completions" and ln["tokens_out"] > 0
    assert ln["timings_ms"]["total"] >= ln["timings_ms"]["ttft"] > 0
    outer = [x for x in map(json.loads, srv.access_log.read_text().splitlines())
             if x["id"] == "async-obs-1" and not x["local"]]
    assert [x["status"] for x in outer] == [202]
    # a batch of two lines: two local lines (made ids), besides the API calls' own
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    data = "".join(json.dumps({"custom_id": f"l{i}", "method": "POST", "url": "/v1/completions",
                               "body": {"model": "default", "prompt": f"Batch {i}:",
                                        "max_tokens": 2}}) + "\n" for i in range(2))
    f = c.files.create(file=("in.jsonl", data.encode()), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")

    def batch_lines():
        try:
            return [x for x in map(json.loads, srv.access_log.read_text().splitlines())
                    if x["local"] and x["endpoint"] == "completions"]
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    assert wait_for(lambda: len(batch_lines()) == 2), c.batches.retrieve(b.id)
    assert all(x["status"] == 200 and re.fullmatch(r"[0-9a-f]{32}", x["id"])
               and x["tokens_out"] > 0 for x in batch_lines())


def test_access_log_tenant_and_replica(srv, barista_bin, tmp_path):
    """Through a gateway with a keys file: the line names the key's tenant, the
    replica (the upstream's api_base) that answered, and the fallback step."""
    key = "sk-obs-tenant-0123456789"
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys:\n  - {{key_sha256: {hashlib.sha256(key.encode()).hexdigest()}, "
                    "tenant: team-obs}\n")
    models = tmp_path / "models.yaml"
    models.write_text("model_list:\n  - model_name: via-gw\n    litellm_params:\n"
                      f"      model: openai/default\n      api_base: {srv.url}/v1\n"
                      "router_settings:\n  fallbacks: [{via-gw: [\"static:Busy.\"]}]\n")
    log = tmp_path / "gw.jsonl"
    gw = Server(barista_bin, None, ["--models", str(models), "--embedding-model", "none",
                                    "--keys", str(keys), "--access-log", str(log)])
    try:
        # an old unlabelled histogram shows (zeros) before anything is observed, as before
        st, _, raw = request(gw, "GET", "/metrics")
        assert b'barista_ttft_seconds_bucket{le="+Inf"} 0' in raw, raw
        st, h, raw = request(gw, "POST", "/v1/chat/completions",
                             body("Say yes.", model="via-gw"),
                             headers={"Authorization": f"Bearer {key}", "X-Request-Id": "gw-1"})
        assert st == 200, raw
        # the upstream's part (attempt start to its first token) is `upstream`, not
        # prefill; the rest is decode; ttft includes it
        t = server_timing(h)
        assert t["upstream"] > 0 and "prefill" not in t and "decode" in t, h["server-timing"]
        assert t["ttft"] >= t["upstream"] and t["total"] >= t["upstream"] + t["decode"] - 0.01

        def line(rid="gw-1"):
            try:
                return next((x for x in map(json.loads, log.read_text().splitlines())
                             if x["id"] == rid), None)
            except (FileNotFoundError, json.JSONDecodeError):
                return None

        assert wait_for(line)
        assert line()["tenant"] == "team-obs"
        assert line()["timings_ms"]["upstream"] > 0 and "prefill" not in line()["timings_ms"]
        assert line()["replica"] == f"{srv.url}/v1"
        # the replica's counters are the gateway's: in the dashboard's data (open:
        # no --admin-key) and once in /metrics (promtool refuses a family twice)
        st, _, snap = request(gw, "GET", "/v1/dashboard/snapshot")
        assert st == 200, snap
        reps = json.loads(snap)["replicas"]
        assert [(r["name"], r["model"], r["requests"]) for r in reps] == \
            [(f"{srv.url}/v1", "via-gw", 1)]
        st, _, raw = request(gw, "GET", "/metrics")
        assert raw.count(b"# TYPE barista_upstream_requests_total ") == 1
        assert [n for n in OLD_UPSTREAM_NAMES if f"# TYPE {n} ".encode() not in raw] == []
        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=raw, capture_output=True,
                               timeout=30)
            assert p.returncode == 0, p.stdout + p.stderr
        assert line()["fallback"] is None
        # streamed through the gateway: the last chunk's barista_timings has it too
        st, h, raw = request(gw, "POST", "/v1/chat/completions",
                             body("Say no.", model="via-gw", stream=True),
                             headers={"Authorization": f"Bearer {key}"})
        assert st == 200, raw
        ev = [json.loads(e) for e in sse_events(raw) if e.startswith("{")]
        bt = ev[-1]["barista_timings"]
        assert bt["upstream"] > 0 and "prefill" not in bt and bt["ttft"] >= bt["upstream"], bt
        # up to the upstream's first token, not its first byte (a role-only chunk that
        # comes before its prefill): nearly all of this client's ttft
        assert bt["upstream"] > 0.5 * bt["ttft"], bt
        # a 1 ms budget no upstream meets: the chain's static step answers, logged
        st, h, raw = request(gw, "POST", "/v1/chat/completions",
                             body("Count to ten.", model="via-gw"),
                             headers={"Authorization": f"Bearer {key}", "X-Request-Id": "gw-fb",
                                      "X-Timeout-Ms": "1", "Cache-Control": "no-store"})
        assert st == 200 and h["x-fallback"] == "static", raw
        assert wait_for(lambda: (line("gw-fb") or {}).get("fallback") == "static")
    finally:
        gw.stop()


def test_access_log_bad_flag(barista_bin, gguf_path):
    p = subprocess.run([barista_bin, "serve", "--port", "0", "-m", gguf_path,
                        "--access-log", "/nonexistent-dir/x.log"],
                       capture_output=True, text=True, timeout=30 * SLOW)
    assert p.returncode != 0 and "access-log" in p.stderr


# ---- Prometheus ----

def test_promtool_and_names(srv):
    if not shutil.which("promtool"):
        pytest.skip("promtool not installed (Debian package prometheus; scripts/deps.sh)")
    st, _, raw = request(srv, "GET", "/metrics")
    assert st == 200
    p = subprocess.run(["promtool", "check", "metrics"], input=raw, capture_output=True,
                       timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    text = raw.decode()
    for name in ("barista_time_to_first_token_seconds_bucket",
                 "barista_time_per_output_token_seconds_bucket",
                 "barista_e2e_request_latency_seconds_bucket",
                 "barista_request_queue_time_seconds_bucket",
                 "barista_request_prefill_time_seconds_bucket",
                 "barista_request_decode_time_seconds_bucket",
                 "barista_request_prompt_tokens_bucket",
                 "barista_request_generation_tokens_bucket",
                 "barista_num_requests_running{", "barista_num_requests_waiting{",
                 "barista_kv_cache_usage_perc{", "barista_ttft_seconds_bucket",
                 "barista_request_duration_seconds_bucket", "barista_generated_tokens_total"):
        assert name in text, name
    assert [n for n in OLD_NAMES if f"# TYPE {n} " not in text] == []
    assert ":" not in "".join(ln.split("{")[0].split(" ")[0] for ln in text.splitlines()
                              if ln and not ln.startswith("#"))


def test_real_prometheus_scrapes(srv, tmp_path):
    if not shutil.which("prometheus"):
        pytest.skip("prometheus not installed (Debian package prometheus; scripts/deps.sh)")
    n = 3
    for i in range(n):
        st, _, _ = request(srv, "POST", "/v1/completions",
                           json.dumps({"prompt": f"Prometheus test {i}:", "max_tokens": 2,
                                       "temperature": 0}))
        assert st == 200
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: barista\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{srv.port}']\n")
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        q = ('sum(barista_requests_total{endpoint="completions",code="200"})')
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})

        def value():
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    d = json.load(r)
            except OSError:
                return None
            res = d.get("data", {}).get("result", [])
            return float(res[0]["value"][1]) if res else None

        assert wait_for(lambda: value() == n, timeout=30, interval=0.5), value()
        # a histogram too: the count of e2e observations of completions
        q2 = "sum(barista_e2e_request_latency_seconds_count)"
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q2})
        assert value() is not None and value() >= n
    finally:
        prom.terminate()
        prom.wait(timeout=10)


# ---- dashboard in Chromium ----

def png_pixels(data):
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes):
    (width, height, channels, rows of bytes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, inter = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and ctype in (2, 6) and inter == 0
            ch = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * ch
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - ch] if x >= ch else 0
            b = prev[x]
            c = prev[x - ch] if x >= ch else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, ch, rows


def build_dir(barista_bin):
    return pathlib.Path(barista_bin).resolve().parent


def test_dashboard_in_chromium(barista_bin, gguf_path):
    chromium = shutil.which("chromium")
    if not chromium or not os.path.exists("/usr/bin/chromedriver"):
        pytest.skip("chromium / chromium-driver not installed (scripts/deps.sh installs them)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError:
        pytest.skip("selenium not installed (tests/requirements.txt)")
    key = "dash-admin-key"
    s = Server(barista_bin, gguf_path, ["--no-embedding-model", "--admin-key", key])
    driver = None
    try:
        # the page loads without the key; its data endpoint refuses without it
        st, h, page = request(s, "GET", "/dashboard")
        assert st == 200 and h["content-type"].startswith("text/html")
        assert b"<canvas" in page and b"http://" not in page and b"https://" not in page
        assert request(s, "GET", "/v1/dashboard/snapshot")[0] == 401
        st, _, _ = request(s, "GET", "/v1/dashboard/snapshot",
                           headers={"Authorization": "Bearer wrong"})
        assert st == 401
        st, _, snap = request(s, "GET", "/v1/dashboard/snapshot",
                              headers={"Authorization": f"Bearer {key}"})
        assert st == 200 and "series" in json.loads(snap)
        # traffic: misses, then hits of the same requests
        with httpx.Client(base_url=s.url, timeout=60 * SLOW) as c:
            for rep in range(3):
                for i in range(3):
                    r = c.post("/v1/chat/completions",
                               content=body(f"Dashboard question {i}."))
                    assert r.status_code == 200
        opts = webdriver.ChromeOptions()
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1400,1000", "--disable-extensions"):
            opts.add_argument(a)
        opts.binary_location = chromium
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        driver.set_page_load_timeout(30 * SLOW)
        driver.get(s.url + "/dashboard")
        # it asks for the key (401), then shows data
        wait_for(lambda: driver.find_element(By.ID, "login").is_displayed(), timeout=15)
        assert driver.find_element(By.ID, "login").is_displayed()
        driver.find_element(By.ID, "key").send_keys(key)
        driver.find_element(By.ID, "key-submit").click()

        def page_total():
            v = driver.find_element(By.ID, "total-requests").get_attribute("data-value")
            return int(v) if v else 0

        def metrics_total():
            st, _, raw = request(s, "GET", "/metrics")
            tot = 0
            for ln in raw.decode().splitlines():
                if ln.startswith("barista_requests_total{endpoint=\"chat_completions\""):
                    tot += int(float(ln.rsplit(" ", 1)[1]))
            return tot

        assert wait_for(lambda: driver.find_element(By.TAG_NAME, "body")
                        .get_attribute("data-nonzero") == "1", timeout=20), \
            driver.find_element(By.ID, "status").text
        assert metrics_total() == 9
        assert wait_for(lambda: page_total() == metrics_total(), timeout=10), \
            (page_total(), metrics_total())
        # a few more updates so the charts have several points
        n0 = int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-updates"))
        wait_for(lambda: int(driver.find_element(By.TAG_NAME, "body")
                             .get_attribute("data-updates")) >= n0 + 2, timeout=10)
        hit = driver.find_element(By.ID, "t-hit").text
        assert hit.endswith("%") and float(hit[:-1]) > 50, hit  # 6 of 9 were hits
        out = build_dir(barista_bin) / "dashboard.png"
        png = driver.get_screenshot_as_png()
        out.write_bytes(png)
        w, h, ch, rows = png_pixels(png)
        assert w >= 1000 and h >= 600
        # not blank: the pixels vary, and the charts' colours are there
        sample = [row[x] for row in rows[::7] for x in range(0, len(row), 13)]
        mean = sum(sample) / len(sample)
        var = sum((v - mean) ** 2 for v in sample) / len(sample)
        assert var > 50, var
        blue = sum(1 for row in rows[::3] for x in range(0, w * ch, ch * 3)
                   if row[x] < 120 and row[x + 1] > 150 and row[x + 2] > 200)
        assert blue > 20, blue  # the requests/s line and the L1 hits (#4fc3f7)
    finally:
        if driver:
            driver.quit()
        s.stop()


# ---- bench plots ----

def test_overload_plot(tmp_path):
    """bench/overload's curves (issue 14 item 4) on a small synthetic run, as
    the bench itself takes ~15 minutes: its plot() writes the PNG through
    bench/plot (the bench venv's matplotlib), and bench/plot reads the table
    saved in docs/BENCHMARKS.md back."""
    root = pathlib.Path(__file__).resolve().parents[2]
    if not (pathlib.Path.home() / ".cache/barista/benchvenv/bin/python").exists():
        pytest.skip("no bench venv (~/.cache/barista/benchvenv, matplotlib): bench/README.md")
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("overload", str(root / "bench" / "overload"))
    ov = importlib.util.module_from_spec(importlib.util.spec_from_loader("overload", loader))
    loader.exec_module(ov)

    def req(cls, status, finish, ttft, total, budget=1.0):
        return {"cls": cls, "status": status, "finish": finish, "ttft": ttft, "total": total,
                "budget": budget, "fallback": None}

    results = [("barista", 1.0, 2.0, [req("interactive", 200, "stop", 0.1, 0.5),
                                       req("interactive", 200, "timeout", 0.2, 1.0),
                                       req("batch", 503, None, None, 0.01)]),
               ("llama-server", 1.0, 2.0, [req("interactive", "client-timeout", None, None, 1.0)]),
               ("barista", 2.0, 4.0, [req("interactive", 200, "stop", 0.3, 0.9)])]
    rows = ov.plot_rows(results)
    r = next(x for x in rows if x["server"] == "barista" and x["level"] == 1.0
             and x["cls"] == "interactive")
    assert (r["n"], r["within"], r["cut"], r["ttft99_ms"]) == (2, 50.0, 1, 100.0)
    assert [x["rejected"] for x in rows if x["cls"] == "batch"] == [1]
    out = tmp_path / "overload.png"
    assert ov.plot(results, "synthetic", str(out))
    w, h, ch, px = png_pixels(out.read_bytes())
    assert w > 600 and h > 600
    blue = sum(1 for row in px[::2] for x in range(0, w * ch, ch * 2)
               if abs(row[x] - 31) < 12 and abs(row[x + 1] - 119) < 12 and abs(row[x + 2] - 180) < 12)
    assert blue > 50, blue  # barista's curves (#1f77b4) are drawn
    # the committed run's table, read back (how docs/bench-overload.png was drawn)
    loader = importlib.machinery.SourceFileLoader("plot", str(root / "bench" / "plot"))
    pl = importlib.util.module_from_spec(importlib.util.spec_from_loader("plot", loader))
    loader.exec_module(pl)
    doc = pl.overload_from_doc((root / "docs" / "BENCHMARKS.md").read_text())
    assert len(doc["rows"]) >= 2 and {r["server"] for r in doc["rows"]} >= {"barista"}
    assert all(0 <= r["within"] <= 100 and r["n"] > 0 for r in doc["rows"])
    assert (root / "docs" / "bench-overload.png").stat().st_size > 20000
