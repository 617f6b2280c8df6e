"""Request translation without HTTP: a body, the tokenizer, the model's config and the server's
config give the engine request (prompt ids, generation config, mode) and the stop strings, or an
APIError with the status, message, param and code the client gets."""

from __future__ import annotations

import pytest
from live_server import TEMPLATE, char_tokenizer  # tests/server is on sys.path

from trimode.config import preset
from trimode.decoding.stop import StopStrings
from trimode.server.schemas import ChatRequest, CompletionRequest
from trimode.server.translate import APIError, ServerConfig, translate, validation_error

MODEL = preset("tiny").replace(vocab_size=96, mask_token_id=3)
PLAIN = MODEL.replace(mask_token_id=None)
TOK = char_tokenizer()


def config(**changes) -> ServerConfig:
    return ServerConfig(**{"model_name": "tiny", "block_size": 4, "max_context": 64, "max_prompt_tokens": 63, **changes})


def completion(**body):
    return CompletionRequest.model_validate({"model": "tiny", "prompt": "Hello", **body})


def chat(**body):
    return ChatRequest.model_validate({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **body})


def test_a_completion_becomes_an_engine_request():
    (req,), stops = translate(completion(max_tokens=5, temperature=0.5, top_p=0.9, seed=3, stop=["x"]),
                           TOK, MODEL, config(), eos_token_ids=[2])
    assert req.prompt == TOK.encode("Hello") and req.mode == "ar" and stops == ["x"]
    gen = req.config
    assert (gen.max_new_tokens, gen.block_size, gen.eos_token_ids) == (5, 4, (2,))
    assert (gen.sampling.temperature, gen.sampling.top_p, gen.sampling.seed) == (0.5, 0.9, 3)
    assert (gen.threshold, gen.draft_threshold) == (0.9, 0.0)  # not given: each knob's default
    assert isinstance(gen.stop, StopStrings) and gen.stop.strings == ("x",)


def test_defaults_ids_chat_and_the_threshold():
    (req,), stops = translate(completion(prompt=[5, 6, 7]), None, MODEL, config(), ())
    assert req.prompt == [5, 6, 7] and stops == [] and req.config.stop is None
    assert req.config.max_new_tokens == 16  # OpenAI's default for completions
    (req,), _ = translate(chat(mode="diffusion", threshold=0.5), TOK, MODEL, config(), ())
    assert req.prompt == TOK.encode_chat([{"role": "user", "content": "hi"}]) and req.mode == "diffusion"
    assert req.config.max_new_tokens == 64 - len(req.prompt)  # chat: up to the context
    assert (req.config.threshold, req.config.draft_threshold) == (0.5, 0.5)  # one threshold sets both
    (req,), _ = translate(chat(max_completion_tokens=3, max_tokens=7), TOK, MODEL, config(), ())
    assert req.config.max_new_tokens == 3


@pytest.mark.parametrize("mode, device, block", [
    ("ar", "cpu", 1), ("linear-spec", "cpu", 8), ("quadratic-spec", "cpu", 4), ("diffusion", "cuda:1", 32),
    ("quadratic-spec", "cuda", 8), ("auto", "cpu", 8),
])
def test_without_a_block_size_each_mode_runs_its_block_for_the_device(mode, device, block):
    (req,), _ = translate(completion(mode=mode), TOK, MODEL, config(block_size=None, device=device), ())
    assert req.config.block_size == block
    (req,), _ = translate(completion(mode=mode, block_size=6), TOK, MODEL, config(block_size=None, device=device), ())
    assert req.config.block_size == 6  # the request's own wins


def test_a_suffix_fills_in_the_middle_by_diffusion_whatever_the_server_mode():
    (req,), _ = translate(completion(suffix=" world", max_tokens=5), TOK, MODEL, config(mode="linear-spec"), ())
    assert req.mode == "diffusion" and req.suffix == TOK.encode(" world", add_special_tokens=False)
    assert req.config.max_new_tokens == 5 and req.reservation == 0
    (plain,), _ = translate(completion(), TOK, MODEL, config(), ())
    assert plain.suffix is None


def test_the_server_mode_is_the_default():
    (req,), _ = translate(completion(), TOK, MODEL, config(mode="quadratic-spec"), ())
    assert (req.mode, req.config.block_size) == ("quadratic-spec", 4)


BAD = [
    (completion(model="gpt-4"), TOK, MODEL, {}, 404, "model", "model_not_found", "does not exist"),
    (completion(), None, MODEL, {}, 400, "prompt", None, "no tokenizer"),
    (completion(prompt=[""]), TOK, MODEL, {}, 400, "prompt", None, "empty after tokenization"),
    (completion(mode="diffusion"), TOK, PLAIN, {}, 400, "mode", None, "needs a mask token"),
    (completion(mode="linear-spec", block_size=1), TOK, MODEL, {}, 400, "block_size", None, "block_size >= 2, got 1"),
    (completion(mode="quadratic-spec"), TOK, MODEL, {"block_size": 1}, 400, "block_size", None, "block_size >= 2"),
    (completion(prompt="a" * 64), TOK, MODEL, {}, 400, "prompt", "context_length_exceeded", "at most 63"),
    (completion(prompt=[1, 2, 999]), TOK, MODEL, {}, 400, "prompt", None, "vocabulary"),
    (completion(max_tokens=60), TOK, MODEL, {}, 400, "max_tokens", "context_length_exceeded", "exceeds the context"),
    (completion(prompt=[5], stop="x"), None, MODEL, {}, 400, "stop", None, "need a tokenizer"),
    (chat(), None, MODEL, {}, 400, "messages", None, "no chat template"),
    (chat(model="x"), TOK, MODEL, {}, 404, "model", "model_not_found", "'x' does not exist"),
    (chat(), TOK, MODEL, {"mode": "turbo"}, 400, None, None, "unknown mode 'turbo'"),
    (completion(suffix="x", mode="ar"), TOK, MODEL, {}, 400, "mode", None, "mode must be 'diffusion' or unset"),
    (completion(suffix="x", logprobs=1), TOK, MODEL, {}, 400, "logprobs", None, "cannot be used with suffix"),
    (completion(suffix="x", echo=True), TOK, MODEL, {}, 400, "echo", None, "cannot be used with suffix"),
    (completion(suffix="x", stop="y"), TOK, MODEL, {}, 400, "stop", None, "cannot be used with suffix"),
    (completion(prompt=[5], suffix="x"), None, MODEL, {}, 400, "suffix", None, "suffix needs one"),
    (completion(suffix="x"), TOK, PLAIN, {}, 400, "mode", None, "needs a mask token"),
]


@pytest.mark.parametrize("body, tokenizer, model, server, status, param, code, words", BAD)
def test_bad_input_is_an_api_error(body, tokenizer, model, server, status, param, code, words):
    with pytest.raises(APIError) as err:
        translate(body, tokenizer, model, config(**server), ())
    assert (err.value.status, err.value.param, err.value.code) == (status, param, code)
    assert words in err.value.message


def test_a_chat_template_that_refuses_is_a_400():
    from trimode.tokenizer import Tokenizer

    strict = Tokenizer(TOK.backend, chat_template="{{ raise_exception('no system messages') }}" + TEMPLATE)
    with pytest.raises(APIError) as err:
        translate(chat(), strict, MODEL, config(), ())
    assert (err.value.status, err.value.param) == (400, "messages")
    assert "refused these messages: no system messages" in err.value.message


def test_schema_errors_name_the_first_bad_field():
    err = validation_error([{"type": "json_invalid", "loc": ("body", 1), "msg": "Expecting value"}])
    assert (err.status, err.code, err.message) == (400, "invalid_json", "request body is not valid JSON: Expecting value")
    err = validation_error([{"type": "float_parsing", "loc": ("body", "temperature"), "msg": "bad float"},
                            {"type": "missing", "loc": ("body", "prompt"), "msg": "Field required"}])
    assert (err.param, err.message) == ("temperature", "temperature: bad float; prompt: Field required")
    assert validation_error([{"type": "model_type", "loc": ("body",), "msg": "not a dict"}]).message == "body: not a dict"
    assert validation_error([]).message == "invalid request"
