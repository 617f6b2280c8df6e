# ruff: noqa: F811 -- the fixtures imported from live_server are pytest fixtures, named as test arguments
"""The completions API as OpenAI and vLLM take it: batched prompts (text or ids) with one indexed
choice each, echo, logprobs with top alternatives and text offsets (the verifier's scores in every
mode), prompt scoring with max_tokens 0, chat logprobs, streaming of several prompts, and a clear
400 for each misuse. One real uvicorn server serves a tiny tri-mode model."""

from __future__ import annotations

import json

import httpx
import pytest
from live_server import LiveServer, client, model, server  # noqa: F401 -- shared fixtures; tests/server is on sys.path

from trimode.decoding import GenerationConfig, decoder_for
from trimode.decoding.score import score


def post(server, **body):
    return httpx.post(server.url + "/v1/completions", json={"model": "tiny", **body}, timeout=60)


def greedy(model, prompt, n, mode="ar"):
    config = GenerationConfig(max_new_tokens=n, block_size=4)
    return decoder_for(mode, model).generate([prompt], config).sequences[0]


def test_several_prompts_are_one_batch_with_an_indexed_choice_each(server, client, model):
    texts = ["Hello", "ab", "The cat sat"]
    reply = client.completions.create(model="tiny", prompt=texts, max_tokens=6, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    for text, choice in zip(texts, reply.choices):
        assert choice.token_ids == greedy(model, server.tokenizer.encode(text), 6)
    assert reply.usage.prompt_tokens == sum(len(server.tokenizer.encode(t)) for t in texts)
    assert reply.usage.completion_tokens == 18
    ids = [server.tokenizer.encode(t) for t in texts]
    by_ids = post(server, prompt=ids, max_tokens=6, temperature=0).json()
    assert [c["token_ids"] for c in by_ids["choices"]] == [c.token_ids for c in reply.choices]
    one = post(server, prompt=ids[1], max_tokens=6, temperature=0).json()
    assert one["choices"][0]["token_ids"] == reply.choices[1].token_ids and one["choices"][0]["index"] == 0


def test_echo_with_max_tokens_0_scores_the_prompt_alone(server, model):
    prompt = server.tokenizer.encode("Hello world")
    body = post(server, prompt=[prompt, prompt[:4]], max_tokens=0, echo=True, logprobs=2).json()
    first = body["choices"][0]
    assert first["text"] == "Hello world" and first["token_ids"] == [] and first["finish_reason"] == "length"
    lp = first["logprobs"]
    want = score(model, prompt, top=2)
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == pytest.approx(want.logprobs[1:], abs=1e-5)
    assert lp["tokens"] == list("Hello world") and lp["text_offset"] == list(range(len(prompt)))
    for i, top in enumerate(lp["top_logprobs"][1:], start=1):
        alternatives = {server.tokenizer.decode([t]): v for t, v in want.top[i]}
        assert top.items() >= alternatives.items()  # the two best, and the prompt's token when not among them
        assert len(top) in (2, 3) and top[lp["tokens"][i]] == pytest.approx(lp["token_logprobs"][i])
    assert body["choices"][1]["logprobs"]["token_logprobs"][1:] == pytest.approx(want.logprobs[1:4], abs=1e-5)
    assert body["usage"]["completion_tokens"] == 0


def test_lm_eval_style_request_echo_one_token_logprobs_1(server, model):
    """What lm-evaluation-harness sends for loglikelihood: echo, max_tokens 1, logprobs 1; it reads
    token_logprobs[ctxlen:-1], so the generated token must be the last entry."""
    context, continuation = server.tokenizer.encode("The cat"), server.tokenizer.encode(" sat")
    body = post(server, prompt=[context + continuation], max_tokens=1, echo=True, logprobs=1, temperature=0).json()
    lp = body["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == len(context + continuation) + 1
    got = sum(lp["token_logprobs"][len(context):-1])
    assert got == pytest.approx(score(model, context + continuation, start=len(context)).total(), abs=1e-5)
    generated = body["choices"][0]["token_ids"]
    assert generated == greedy(model, context + continuation, 1)
    assert lp["token_logprobs"][-1] == pytest.approx(max(lp["top_logprobs"][-1].values()))  # greedy: the best


def test_completion_logprobs_are_the_verifiers_in_every_mode(server, model):
    prompt = server.tokenizer.encode("Hello")
    for mode in ("ar", "linear-spec", "quadratic-spec", "diffusion"):
        body = post(server, prompt=prompt, max_tokens=8, temperature=0, logprobs=0, mode=mode, block_size=4).json()
        choice = body["choices"][0]
        lp = choice["logprobs"]
        tokens = choice["token_ids"]
        assert len(lp["token_logprobs"]) == len(tokens) and lp["top_logprobs"] == [
            {t: v} for t, v in zip(lp["tokens"], lp["token_logprobs"])]
        assert lp["token_logprobs"] == pytest.approx(score(model, prompt + tokens, start=len(prompt)).logprobs, abs=1e-5)
        assert "".join(lp["tokens"]) == choice["text"] and lp["text_offset"] == list(range(len(tokens)))
        if mode != "diffusion":  # lossless modes: greedy AR's tokens
            assert tokens == greedy(model, prompt, 8)


def test_logprobs_stop_at_a_stop_string(server, model):
    prompt = server.tokenizer.encode("Hello")
    text = server.tokenizer.decode(greedy(model, prompt, 12), skip_special_tokens=True)
    stop = text[5:7]
    body = post(server, prompt="Hello", max_tokens=12, temperature=0, logprobs=0, stop=[stop]).json()
    choice = body["choices"][0]
    assert choice["text"] == text[: text.find(stop)]
    assert "".join(choice["logprobs"]["tokens"]) == choice["text"]


def test_chat_logprobs_and_top_logprobs(server, client, model):
    messages = [{"role": "user", "content": "hi"}]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5, temperature=0,
                                           logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    prompt = server.tokenizer.encode_chat(messages)
    want = score(model, prompt + reply.choices[0].token_ids, start=len(prompt), top=3)
    assert [c.logprob for c in content] == pytest.approx(want.logprobs, abs=1e-5)
    assert all(len(c.top_logprobs) == 3 and c.top_logprobs[0].logprob == pytest.approx(c.logprob) for c in content)
    assert [bytes(c.bytes).decode() for c in content] == [c.token for c in content]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5, temperature=0)
    assert plain.choices[0].logprobs is None


def test_several_prompts_stream_their_chunks_by_index(server):
    texts = ["Hello", "ab"]
    whole = post(server, prompt=texts, max_tokens=7, temperature=0).json()
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"model": "tiny", "prompt": texts, "max_tokens": 7, "temperature": 0, "stream": True}) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[len("data: "):]) for ln in lines[:-1]]
    for i, choice in enumerate(whole["choices"]):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == i]
        assert "".join(c["text"] for c in mine) == choice["text"]
        assert mine[-1]["finish_reason"] == "length"


def test_a_streamed_reply_with_logprobs_sends_them_with_its_text(server):
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"model": "tiny", "prompt": "Hello", "max_tokens": 6, "temperature": 0, "stream": True,
                            "logprobs": 1, "echo": True}) as r:
        chunks = [json.loads(ln[len("data: "):]) for ln in r.iter_lines() if ln and ln != "data: [DONE]"]
    whole = post(server, prompt="Hello", max_tokens=6, temperature=0, logprobs=1, echo=True).json()["choices"][0]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["text"]
    assert [c["choices"][0]["logprobs"] for c in chunks if c["choices"][0]["logprobs"]] == [whole["logprobs"]]


BAD = [
    ({"prompt": "a", "max_tokens": 0}, "max_tokens", "only useful with echo"),
    ({"prompt": "a", "logprobs": 21}, "logprobs", "less than or equal to 20"),
    ({"prompt": "a", "logprobs": -1}, "logprobs", "greater than or equal to 0"),
    ({"prompt": ["a"] * 65}, "prompt", "at most 64"),
    ({"prompt": [[5, 6], []]}, "prompt", "at least 1"),
    ({"prompt": ["ab", ""]}, "prompt", "prompt[1] is empty"),
    ({"prompt": [[5, 6], [7, 999]]}, "prompt", "prompt[1] token ids must be < 96"),
    ({"prompt": [[5], "a"]}, "prompt", "prompt must be a string, a list of token ids"),
    ({"prompt": ["a", "bc"], "max_tokens": 255}, "max_tokens", "max_tokens 255 + prompt[1] 2 tokens exceeds the context"),
]


@pytest.mark.parametrize("body, param, words", BAD)
def test_misuse_is_a_clear_400(server, body, param, words):
    r = post(server, **body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_chat_top_logprobs_without_logprobs_is_a_400(server):
    r = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2})
    assert r.status_code == 400 and "top_logprobs needs logprobs: true" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
