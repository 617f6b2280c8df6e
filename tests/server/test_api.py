# ruff: noqa: F811 -- the fixtures imported from live_server are pytest fixtures, named as test arguments
"""The server through the official openai client and raw HTTP: completions and chat, streamed and
not, per-request modes, seeds, stop strings, every refusal as a clean 4xx, and a disconnect that
frees the cache rows. One real uvicorn server on a free port serves a tiny tri-mode model."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from live_server import LiveServer, client, model, server  # noqa: F401 -- shared fixtures; tests/server is on sys.path

from trimode.decoding import GenerationConfig, decoder_for


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    schema = httpx.get(server.url + "/openapi.json").json()
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"} <= set(schema["paths"])


def test_completion_streamed_and_not_agree_with_the_decoder(server, client, model):
    reply = client.completions.create(model="tiny", prompt="Hello", max_tokens=12, temperature=0)
    prompt = server.tokenizer.encode("Hello")
    want = decoder_for("ar", model).generate([prompt], GenerationConfig(max_new_tokens=12)).sequences[0]
    assert reply.choices[0].token_ids == want
    assert reply.choices[0].text == server.tokenizer.decode(want, skip_special_tokens=True)
    assert reply.choices[0].finish_reason == "length"
    usage = reply.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (len(prompt), 12)
    assert usage.nfe == 12 and usage.tokens_per_forward == 1.0  # AR: prefill + 11 decode forwards
    chunks = list(client.completions.create(model="tiny", prompt="Hello", max_tokens=12, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == reply.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage.completion_tokens == 12


def test_chat_streamed_and_not(server, client):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    prompt = server.tokenizer.encode_chat(messages)
    assert reply.usage.prompt_tokens == len(prompt) and reply.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"


@pytest.mark.parametrize("mode, kinds", [
    ("ar", {"prefill", "decode"}), ("linear-spec", {"prefill", "draft", "verify"}),
    ("quadratic-spec", {"prefill", "grid"}), ("auto", {"prefill", "draft", "verify", "decode"}),
])
def test_lossless_modes_per_request(client, mode, kinds):
    ar = client.completions.create(model="tiny", prompt="abc", max_tokens=16, temperature=0)
    got = client.completions.create(model="tiny", prompt="abc", max_tokens=16, temperature=0,
                                    extra_body={"mode": mode, "block_size": 4})
    assert got.choices[0].token_ids == ar.choices[0].token_ids
    # auto alone speculates first (load 1 <= spec_max_rows), and may measure AR too
    assert set(got.usage.forwards) <= kinds and ("verify" in got.usage.forwards or mode != "auto")


def test_diffusion_per_request_with_threshold(client):
    got = client.completions.create(model="tiny", prompt="abc", max_tokens=16, temperature=0,
                                    extra_body={"mode": "diffusion", "block_size": 4, "threshold": 0.5})
    assert got.usage.completion_tokens == 16 and "denoise" in got.usage.forwards


def test_suffix_fills_in_the_middle_streamed_and_not(server, client, model):
    from trimode.decoding.infill import infill

    reply = client.completions.create(model="tiny", prompt="def f(x):", suffix="\n    return y", max_tokens=6,
                                      temperature=0)
    tok = server.tokenizer
    want = infill(model, [tok.encode("def f(x):")], [tok.encode("\n    return y", add_special_tokens=False)],
                  GenerationConfig(max_new_tokens=6, block_size=server.config.block_size or 8)).middles[0]
    assert reply.choices[0].token_ids == want and reply.usage.completion_tokens == 6
    assert "denoise" in reply.usage.forwards
    chunks = list(client.completions.create(model="tiny", prompt="def f(x):", suffix="\n    return y", max_tokens=6,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == reply.choices[0].text
    with pytest.raises(openai.BadRequestError, match="cannot be used with suffix"):
        client.completions.create(model="tiny", prompt="a", suffix="b", max_tokens=4, logprobs=1)


def test_seed_reproduces_sampling(client):
    def sample(seed):
        return client.completions.create(model="tiny", prompt="xyz", max_tokens=16, temperature=0.9, top_p=0.9,
                                         seed=seed).choices[0].token_ids
    assert sample(7) == sample(7) and sample(7) != sample(8)


def test_stop_string_cuts_the_text(client):
    full = client.completions.create(model="tiny", prompt="Hello", max_tokens=24, temperature=0).choices[0].text
    stop = full[8:10]
    want = full[: full.find(stop)]
    got = client.completions.create(model="tiny", prompt="Hello", max_tokens=24, temperature=0, stop=[stop])
    assert got.choices[0].text == want and got.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny", prompt="Hello", max_tokens=24, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == want


BAD = [
    ("{not json", 400, "not valid JSON"),
    ('{"model": "tiny", "prompt": 5}', 400, "prompt"),
    ('{"model": "tiny", "prompt": "a", "temperature": "hot"}', 400, "temperature"),
    ('{"model": "nope", "prompt": "a"}', 404, "does not exist"),
    ('{"model": "tiny", "prompt": "a", "max_tokens": -3}', 400, "max_tokens"),
    ('{"model": "tiny", "prompt": "a", "max_tokens": 10000000}', 400, "exceeds the context"),
    ('{"model": "tiny", "prompt": "' + "a" * 400 + '"}', 400, "at most 255"),
    ('{"model": "tiny", "prompt": "a", "mode": "turbo"}', 400, "mode"),
    ('{"model": "tiny", "prompt": "a", "mode": "linear-spec", "block_size": 1}', 400, "block_size >= 2"),
    ('{"model": "tiny", "prompt": [1, 2, 999]}', 400, "vocabulary"),
    ('{"model": "tiny", "prompt": "a", "n": 2}', 400, "n"),
    ('{"model": "tiny", "prompt": "a", "frobnicate": 1}', 400, "frobnicate"),
    ('{"model": "tiny", "prompt": "a", "stop": [' + ", ".join(['"s"'] * 17) + ']}', 400, "at most 16"),
    ('[]', 400, "body"),
]


@pytest.mark.parametrize("body, status, words", BAD)
def test_bad_input_is_a_clean_4xx(server, body, status, words):
    r = httpx.post(server.url + "/v1/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]


def test_bad_chat_input_and_the_server_stays_up(server, client):
    for body in ({"model": "tiny", "messages": []}, {"model": "tiny", "messages": [{"role": "robot", "content": "x"}]},
                 {"model": "tiny", "messages": [{"role": "user"}]}):
        assert httpx.post(server.url + "/v1/chat/completions", json=body).status_code == 400
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert client.completions.create(model="tiny", prompt="ok", max_tokens=3).usage.completion_tokens == 3


def _metrics(server):
    return httpx.get(server.url + "/metrics", headers={"accept": "application/json"}).json()


def test_disconnect_mid_stream_frees_the_cache_rows(server):
    cancelled = _metrics(server)["counters"].get("cancelled", 0)
    # Quadratic speculation with a wide block: slow per token, so the client surely leaves mid-way.
    body = {"model": "tiny", "prompt": "a long one", "max_tokens": 240, "temperature": 0, "stream": True,
            "mode": "quadratic-spec", "block_size": 16}
    with httpx.Client(timeout=30) as http, http.stream("POST", server.url + "/v1/completions", json=body) as r:
        lines = r.iter_lines()
        seen = []
        for line in lines:
            if line.startswith("data: {"):
                seen.append(line)
            if len(seen) >= 3:
                break
        assert _metrics(server)["cache_slots_in_use"] == 1  # still decoding when the client leaves
    deadline = time.time() + 10
    while time.time() < deadline:
        m = _metrics(server)
        if m["cache_slots_in_use"] == 0 and m["counters"].get("cancelled", 0) == cancelled + 1:
            break
        time.sleep(0.05)
    assert m["cache_slots_in_use"] == 0 and m["reserved_tokens"] == 0
    assert m["counters"].get("cancelled", 0) == cancelled + 1
