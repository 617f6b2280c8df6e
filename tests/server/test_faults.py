"""No request can hurt another through the HTTP API: poisoned sampling settings beside a victim
stream, unbounded blocks, oversized bodies and prompts, abandoned non-streamed requests, stalled
sockets, error shapes and edge types, the API key and the allowed hosts."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from conftest import tri_tiny
from live_server import LiveServer

from trimode.decoding import GenerationConfig, decoder_for
from trimode.server.guard import LOOPBACK_HOSTS, default_allowed_hosts, host_name


@pytest.fixture(scope="module")
def model():
    return tri_tiny(seed=0)


@pytest.fixture(scope="module")
def srv(model):
    with LiveServer(model, max_context=256, max_step_tokens=200,
                    server_kw={"max_body_bytes": 20_000, "allowed_hosts": LOOPBACK_HOSTS, "max_prompt_tokens": 100},
                    timeouts={"header_timeout": 0.5, "body_timeout": 0.5}) as s:
        yield s


def post(srv, body, path="/v1/completions", **kw):
    return httpx.post(srv.url + path, json=body, timeout=30, **kw)


def alone(model, mode, prompt, n):
    return decoder_for(mode, model).generate([prompt], GenerationConfig(max_new_tokens=n, block_size=4)).sequences[0]


def stream_ids(srv, body, out):
    with httpx.stream("POST", srv.url + "/v1/completions", json={**body, "stream": True}, timeout=30) as r:
        out["status"] = r.status_code
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                out.setdefault("text", []).append(chunk["choices"][0].get("text", ""))
                out["finish"] = chunk["choices"][0].get("finish_reason") or out.get("finish")


@pytest.mark.parametrize("mode", ["ar", "linear-spec", "quadratic-spec", "diffusion", "auto"])
@pytest.mark.parametrize("poison", [{"temperature": 1e-40}, {"temperature": 0.7, "top_p": 1e-300}])
def test_a_poisoned_request_beside_a_victim_stream(srv, model, mode, poison):
    victim: dict = {}
    body = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 40, "temperature": 0, "mode": mode}
    t = threading.Thread(target=stream_ids, args=(srv, body, victim))
    t.start()
    r = post(srv, {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 8, "mode": mode, **poison})
    t.join(30)
    assert r.status_code == 200, r.text
    assert victim["status"] == 200 and victim["finish"] in ("length", "stop")
    expected = srv.tokenizer.decode(alone(model, "linear-spec" if mode == "auto" else mode, [5, 6, 7], 40), True)
    assert "".join(victim["text"]) == expected


@pytest.mark.parametrize("body, message", [
    ({"mode": "quadratic-spec", "block_size": 255}, "takes block_size <= 32, got 255"),
    ({"mode": "quadratic-spec", "block_size": 16}, "puts 273 tokens in one forward, more than this server's max_step_tokens 200"),
    ({"mode": "diffusion", "block_size": 200}, "takes block_size <= 128"),
])
def test_a_block_beyond_the_mode_or_the_step_budget_is_refused(srv, body, message):
    r = post(srv, {"model": "tiny", "prompt": [5, 6], "max_tokens": 2, **body})
    assert r.status_code == 400 and message in r.json()["error"]["message"]


def test_bodies_over_the_limit_get_413_whether_sized_or_chunked(srv):
    big = {"model": "tiny", "prompt": "a" * 30_000}
    r = post(srv, big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks():
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 4096):
            yield payload[i:i + 4096]

    r = httpx.post(srv.url + "/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than this server's limit of 20000 bytes" in r.json()["error"]["message"]


def test_a_prompt_too_long_for_the_context_is_refused_before_it_is_tokenized(srv, monkeypatch):
    calls = []
    monkeypatch.setattr(srv.tokenizer, "encode", lambda *a, **k: calls.append(a) or [5])
    n = 100 * srv.tokenizer.max_token_chars + 1
    r = post(srv, {"model": "tiny", "prompt": "a" * n})
    assert r.status_code == 400 and f"has {n} characters" in r.json()["error"]["message"] and not calls
    r = post(srv, {"model": "tiny", "messages": [{"role": "user", "content": "a" * n}]}, "/v1/chat/completions")
    assert r.status_code == 400 and "characters" in r.json()["error"]["message"]


def test_tokenizing_does_not_hold_up_the_event_loop(srv, monkeypatch):
    real = srv.tokenizer.encode

    def slow(*a, **k):
        time.sleep(1.5)
        return real(*a, **k)

    monkeypatch.setattr(srv.tokenizer, "encode", slow)
    t = threading.Thread(target=post, args=(srv, {"model": "tiny", "prompt": "abc", "max_tokens": 1}))
    t.start()
    time.sleep(0.2)
    start = time.perf_counter()
    assert httpx.get(srv.url + "/health", timeout=10).status_code == 200
    assert time.perf_counter() - start < 0.5  # not behind the 1.5 s tokenization
    t.join()


def raw_request(srv, body: dict) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


def test_an_abandoned_non_streamed_request_is_cancelled_while_tokens_flow(srv, monkeypatch):
    decoder = srv.engine.decoders["ar"]
    real_step = decoder.step

    def slow_step(batch):  # 250 tokens take 5 s: long enough to leave in the middle
        time.sleep(0.02)
        real_step(batch)

    monkeypatch.setattr(decoder, "step", slow_step)
    before = dict(srv.engine.counters)
    sock = raw_request(srv, {"model": "tiny", "prompt": [5, 6], "max_tokens": 250, "temperature": 0, "mode": "ar"})
    deadline = time.time() + 10
    while srv.engine.metrics()["active_requests"] == 0:
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(0.3)  # tokens are flowing: the old check (after 0.5 s without an event) never ran
    sock.close()
    closed = time.perf_counter()
    while srv.engine.metrics()["active_requests"]:
        assert time.perf_counter() - closed < 2
        time.sleep(0.005)
    assert time.perf_counter() - closed < 0.25  # the disconnect reaches the engine within a few steps
    after = srv.engine.counters
    assert after["cancelled"] == before.get("cancelled", 0) + 1 and after["length"] == before.get("length", 0)
    assert srv.engine.cancel_lags[-1] <= 1  # freed at the next step boundary


@pytest.mark.parametrize("sent", [b"", b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                                  b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"mo"])
def test_stalled_sockets_are_closed_by_the_read_timeouts(srv, sent):
    socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(5)]
    for s in socks:
        s.sendall(sent)
        s.settimeout(5)
    start = time.perf_counter()
    for s in socks:
        data = s.recv(65536)  # b"" once the server closes (or a reply, then b"")
        while data:
            data = s.recv(65536)
        s.close()
    assert time.perf_counter() - start < 3  # 0.5 s timeouts here (10 s and 30 s by default)
    assert httpx.get(srv.url + "/health").status_code == 200


@pytest.mark.parametrize("method, path, body, status", [
    ("GET", "/nowhere", None, 404),
    ("DELETE", "/v1/completions", None, 405),
    ("POST", "/v1/completions", b"{not json", 400),
    ("POST", "/v1/completions", b"", 400),
    ("POST", "/v1/completions", b"[1, 2]", 400),
    ("POST", "/v1/models", b"{}", 405),
    ("GET", "/v1/models/other", None, 404),
    ("GET", "/metrics?format=xml", None, 400),
])
def test_every_error_has_the_openai_shape(srv, method, path, body, status):
    r = httpx.request(method, srv.url + path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]


def test_lone_surrogates_and_booleans_are_refused_clearly_and_keep_the_connection(srv):
    with httpx.Client(base_url=srv.url) as http:
        for path, body, where in [
            ("/v1/completions", '{"model":"tiny","prompt":["\\ud800"]}', "prompt.0"),
            ("/v1/completions", '{"model":"tiny","prompt":"a\\udfff"}', "prompt"),
            ("/v1/chat/completions", '{"model":"tiny","messages":[{"role":"user","content":"\\ud800"}]}', "messages.0.content"),
            ("/v1/completions", '{"model":"tiny","prompt":"a","stop":["\\ud800"]}', "stop"),
        ]:
            r = http.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, r.text
            message = r.json()["error"]["message"]
            assert message.startswith(where) and "lone surrogate" in message
        r = http.post("/v1/completions", json={"model": "tiny", "prompt": [True, False], "max_tokens": 1})
        assert r.status_code == 400
        assert http.post("/v1/completions", json={"model": "tiny", "prompt": [5], "max_tokens": 1}).status_code == 200


def test_allowed_hosts_refuse_a_rebound_domain(srv):
    assert httpx.get(srv.url + "/v1/models", headers={"host": f"localhost:{srv.port}"}).status_code == 200
    r = httpx.get(srv.url + "/v1/models", headers={"host": "attacker.example:8000"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "host_not_allowed"
    assert default_allowed_hosts("127.0.0.1", None) == LOOPBACK_HOSTS
    assert default_allowed_hosts("::1", None) == LOOPBACK_HOSTS
    assert default_allowed_hosts("0.0.0.0", None) is None
    assert default_allowed_hosts("127.0.0.1", ["Box.lan", "localhost"]) == ("box.lan", "localhost")
    assert default_allowed_hosts("127.0.0.1", ["*"]) is None
    assert [host_name(h) for h in ("[::1]:8000", "LocalHost:1", "::1", "a.b")] == ["::1", "localhost", "::1", "a.b"]


def test_the_api_key_is_required_on_the_api_and_metrics_not_on_health(model):
    with LiveServer(model, server_kw={"api_key": "s3cret"}) as s:
        body = {"model": "tiny", "prompt": [5], "max_tokens": 1}
        assert httpx.post(s.url + "/v1/completions", json=body).status_code == 401
        wrong = httpx.post(s.url + "/v1/completions", json=body, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(s.url + "/metrics").status_code == 401
        good = {"authorization": "Bearer s3cret"}
        assert httpx.post(s.url + "/v1/completions", json=body, headers=good).status_code == 200
        assert httpx.get(s.url + "/metrics", headers=good).status_code == 200
        assert httpx.get(s.url + "/health").status_code == 200
        import openai

        out = openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret", max_retries=0).completions.create(
            model="tiny", prompt=[5], max_tokens=2)
        assert out.choices[0].finish_reason in ("length", "stop")


def test_a_bug_in_a_route_is_a_500_in_the_openai_shape(srv, monkeypatch):
    import trimode.server.app as app_module

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app_module, "translate", broken)
    r = post(srv, {"model": "tiny", "prompt": [5], "max_tokens": 1})
    assert r.status_code == 500 and r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == {"message": "internal error: RuntimeError", "type": "server_error", "param": None,
                                 "code": "internal_error"}
    assert httpx.get(srv.url + "/health").status_code == 200
