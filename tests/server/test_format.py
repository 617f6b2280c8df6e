"""The response objects and streamed chunks, from engine events, without HTTP."""

from __future__ import annotations

import json

from live_server import char_tokenizer  # tests/server is on sys.path

from trimode.engine import Event
from trimode.server.format import DONE, Reply, error_body, model_card, model_list, sse
from trimode.server.translate import ServerConfig

TOK = char_tokenizer()
USAGE = {"prompt_tokens": 2, "completion_tokens": 5}


def ids(text: str) -> list[int]:
    return TOK.encode(text)


def reply(chat: bool, tokenizer=TOK, stops=()) -> Reply:
    return Reply(chat, "tiny", tokenizer, stops, id="cmpl-1", created=7)


def stream(r: Reply, events: list[Event]) -> list[dict]:
    return r.opening() + [c for e in events for c in r.chunks(e)]


def test_a_whole_completion_and_chat_reply():
    r = reply(False)
    done = Event("done", finish_reason="eos", usage=USAGE)
    assert r.response("hi", done, [40, 41]) == {
        "id": "cmpl-1", "object": "text_completion", "created": 7, "model": "tiny",
        "choices": [{"index": 0, "finish_reason": "stop", "text": "hi", "logprobs": None, "token_ids": [40, 41]}],
        "usage": USAGE,
    }
    c = reply(True).response("hi", Event("done", finish_reason="length", usage=USAGE), [])["choices"][0]
    assert c == {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "hi"}, "token_ids": []}
    assert Reply(True, "m").id.startswith("chatcmpl-") and Reply(False, "m").id.startswith("cmpl-")


def test_a_streamed_chat_opens_with_the_role_then_text_then_the_finish():
    r = reply(True, stops=["!"])
    chunks = stream(r, [Event("tokens", ids("he")), Event("tokens", ids("y!x")),
                        Event("done", finish_reason="stop", usage=USAGE)])
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "he"}, {"content": "y"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert [("usage" in c) for c in chunks] == [False, False, False, True] and chunks[-1]["usage"] == USAGE
    # the same bytes as the former string-patched first chunk
    assert sse(chunks[0]) == ('data: {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "tiny", '
                              '"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, '
                              '"finish_reason": null}]}\n\n')


def test_a_streamed_completion_sends_held_text_with_the_end():
    r = reply(False, stops=["END"])
    chunks = stream(r, [Event("tokens", ids("abcd")), Event("tokens", []),
                        Event("done", finish_reason="length", usage=USAGE)])
    texts = [c["choices"][0]["text"] for c in chunks]
    assert texts == ["ab", "cd", ""]  # "cd" might have begun "END": it waits for the end, then comes first
    assert chunks[-1]["choices"][0] == {"index": 0, "text": "", "finish_reason": "length", "logprobs": None}
    assert chunks[-1]["object"] == "text_completion" and "usage" not in chunks[1]


def test_without_a_tokenizer_chunks_carry_the_ids():
    r = reply(False, tokenizer=None)
    chunks = stream(r, [Event("tokens", [5, 6]), Event("done", finish_reason="eos", usage=USAGE)])
    assert [c["choices"][0].get("token_ids") for c in chunks] == [[5, 6], None]
    assert [c["choices"][0]["text"] for c in chunks] == ["", ""]
    assert r.delta(Event("tokens", [7])) == ""


def test_an_error_event_is_an_error_object():
    assert reply(True).chunks(Event("error", message="boom")) == [{"error": {"message": "boom", "type": "server_error"}}]
    assert DONE == "data: [DONE]\n\n" and json.loads(sse({"a": 1})[len("data: "):]) == {"a": 1}


def test_models_and_errors():
    config = ServerConfig(model_name="tiny", mode="auto", max_context=256)
    card = {"id": "tiny", "object": "model", "created": 0, "owned_by": "trimode", "max_context": 256, "default_mode": "auto"}
    assert model_card(config) == card and model_list(config) == {"object": "list", "data": [card]}
    assert error_body(400, "bad", "prompt") == {"error": {"message": "bad", "type": "invalid_request_error",
                                                          "param": "prompt", "code": None}}
    assert [error_body(s, "x")["error"]["type"] for s in (404, 503, 500, 422)] == [
        "not_found_error", "server_overloaded", "server_error", "invalid_request_error"]
