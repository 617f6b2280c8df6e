"""The OpenAI-compatible HTTP API over an :class:`~trimode.engine.Engine`.

Handlers only validate, tokenize and relay: the model runs on the engine thread, and each request
reads its events from an asyncio queue fed with ``call_soon_threadsafe``. A client that goes away
(closed stream, or a dropped connection while waiting for a non-streamed reply) cancels its
request, which frees its cache rows at the engine's next step. Every refusal is an OpenAI-style
error object ``{"error": {"message", "type", "param", "code"}}``: 400 for bad input, 404 for an
unknown model, 503 when the waiting queue is full.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from jinja2.exceptions import TemplateError

from ..decoding.base import GenerationConfig
from ..decoding.stop import StopStrings
from ..engine import Engine, EngineFull, Event, Request
from ..sampling import SamplingParams
from .schemas import ChatRequest, CompletionRequest
from .text import TextStream

NEEDS_MASK = ("diffusion", "linear-spec", "quadratic-spec")
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "cancelled"}


@dataclass
class ServerConfig:
    model_name: str
    mode: str = "ar"
    block_size: int = 32
    max_context: int = 8192  # prompt + generated tokens
    max_prompt_tokens: int = 8191
    default_max_tokens: int = 16  # completions (OpenAI's default)
    default_chat_max_tokens: int = 1024


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = {404: "not_found_error", 503: "server_overloaded", 500: "server_error"}.get(status, "invalid_request_error")
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}},
        status_code=status,
        headers={"Retry-After": "1"} if status == 503 else None,
    )


def create_app(engine: Engine, tokenizer, eos_token_ids: tuple[int, ...], config: ServerConfig) -> FastAPI:
    app = FastAPI(title="trimode", version="0.1.0",
                  description="OpenAI-compatible server for tri-mode models (AR, diffusion, self-speculation, auto).")
    model = engine.model

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        parts, param = [], None
        for err in exc.errors():
            loc = [str(x) for x in err.get("loc", ()) if x != "body"]
            if err.get("type") == "json_invalid":
                return error_response(400, f"request body is not valid JSON: {err.get('msg')}", code="invalid_json")
            param = param or (loc[0] if loc else None)
            parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg')}")
        return error_response(400, "; ".join(parts[:5]) or "invalid request", param=param)

    @app.exception_handler(APIError)
    async def _api_error(_: HTTPRequest, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code)

    @app.get("/health")
    async def health() -> JSONResponse:
        ok = engine.alive
        return JSONResponse({"status": "ok" if ok else "engine stopped"}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return engine.metrics()

    def model_card() -> dict[str, Any]:
        return {"id": config.model_name, "object": "model", "created": 0, "owned_by": "trimode",
                "max_context": config.max_context, "default_mode": config.mode}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model_info(model_id: str) -> dict[str, Any]:
        check_model(model_id)
        return model_card()

    def check_model(name: str) -> None:
        if name != config.model_name:
            raise APIError(404, f"model {name!r} does not exist; this server serves {config.model_name!r}",
                           param="model", code="model_not_found")

    def build(body: CompletionRequest | ChatRequest, prompt: list[int], default_max: int) -> tuple[Request, list[str]]:
        mode = body.mode or config.mode
        block = body.block_size or config.block_size
        if mode in NEEDS_MASK and model.config.mask_token_id is None:
            raise APIError(400, f"mode {mode!r} needs a mask token and this model has none (serve it with "
                                "--mask-token, or use mode 'ar' or 'auto')", param="mode")
        if mode in ("linear-spec", "quadratic-spec") and block < 2:
            raise APIError(400, f"mode {mode!r} needs block_size >= 2, got {block}", param="block_size")
        if len(prompt) > config.max_prompt_tokens:
            raise APIError(400, f"prompt has {len(prompt)} tokens; this server accepts at most "
                                f"{config.max_prompt_tokens}", param="prompt", code="context_length_exceeded")
        bad = [t for t in prompt if t >= model.config.vocab_size]
        if bad:
            raise APIError(400, f"prompt token ids must be < {model.config.vocab_size} (the vocabulary), got {bad[:5]}",
                           param="prompt")
        room = config.max_context - len(prompt)
        asked = getattr(body, "max_completion_tokens", None) or body.max_tokens
        if asked is not None and asked > room:
            raise APIError(400, f"max_tokens {asked} + prompt {len(prompt)} tokens exceeds the context of "
                                f"{config.max_context} tokens", param="max_tokens", code="context_length_exceeded")
        max_new = asked if asked is not None else max(1, min(default_max, room))
        stops = body.stop_list()
        if stops and tokenizer is None:
            raise APIError(400, "stop strings need a tokenizer; this model has none", param="stop")
        gen = GenerationConfig(
            max_new_tokens=max_new,
            sampling=SamplingParams(temperature=body.temperature, top_p=body.top_p, seed=body.seed),
            eos_token_ids=eos_token_ids,
            stop=StopStrings(tokenizer, stops) if stops else None,
            block_size=block,
            threshold=body.threshold if body.threshold is not None else 0.9,
            draft_threshold=body.threshold if body.threshold is not None else 0.0,
        )
        return Request(prompt, gen, mode, sink=lambda e: None), stops

    async def events(http: HTTPRequest, req: Request) -> AsyncIterator[Event]:
        loop, inbox = asyncio.get_running_loop(), asyncio.Queue()
        req.sink = lambda e: loop.call_soon_threadsafe(inbox.put_nowait, e)
        try:
            engine.submit(req)
        except EngineFull as err:
            raise APIError(503, str(err), code="overloaded") from None
        except ValueError as err:
            raise APIError(400, str(err)) from None
        finished = False
        try:
            while True:
                try:
                    event = await asyncio.wait_for(inbox.get(), 0.5)
                except asyncio.TimeoutError:
                    if await http.is_disconnected():
                        return
                    continue
                finished = event.kind != "tokens"
                yield event
                if finished:
                    return
        finally:
            if not finished:
                engine.cancel(req)

    async def respond(http: HTTPRequest, body, req: Request, stops: list[str], chat: bool):
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        text = TextStream(tokenizer, stops) if tokenizer is not None else None
        stream = events(http, req)
        first = await anext(stream)  # submit now, so refusals are plain HTTP errors even when streaming
        if first.kind == "error":
            raise APIError(500, f"generation failed: {first.message}")

        def delta_of(event: Event) -> str:
            if text is None:
                return ""
            return text.add(event.tokens, final=event.kind == "done")

        if not body.stream:
            pieces, last = [delta_of(first)], first
            async for event in stream:
                if event.kind == "error":
                    raise APIError(500, f"generation failed: {event.message}")
                pieces.append(delta_of(event))
                last = event
            if last.kind != "done":  # client gone
                return JSONResponse({}, status_code=499)
            content = "".join(pieces)
            choice: dict[str, Any] = {"index": 0, "finish_reason": FINISH[last.finish_reason]}
            if chat:
                choice["message"] = {"role": "assistant", "content": content}
            else:
                choice.update(text=content, logprobs=None)
            choice["token_ids"] = req.row.tokens if req.row else []  # extra field: the exact output
            return {"id": rid, "object": obj, "created": created, "model": config.model_name,
                    "choices": [choice], "usage": last.usage}

        async def sse() -> AsyncIterator[str]:
            def chunk(delta: str | None, finish: str | None, event: Event) -> str:
                if chat:
                    choice = {"index": 0, "delta": {} if delta is None else {"content": delta}, "finish_reason": finish}
                else:
                    choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
                if text is None and event.tokens:
                    choice["token_ids"] = event.tokens
                out = {"id": rid, "object": obj + (".chunk" if chat else ""), "created": created,
                       "model": config.model_name, "choices": [choice]}
                if finish is not None:
                    out["usage"] = event.usage
                return f"data: {json.dumps(out)}\n\n"

            try:
                if chat:
                    yield chunk("", None, Event("tokens")).replace('{"content": ""}', '{"role": "assistant", "content": ""}')
                event = first
                while True:
                    if event.kind == "error":
                        yield f"data: {json.dumps({'error': {'message': event.message, 'type': 'server_error'}})}\n\n"
                        break
                    d = delta_of(event)
                    if event.kind == "done":
                        if d:
                            yield chunk(d, None, Event("tokens"))
                        yield chunk(None if chat else "", FINISH[event.finish_reason], event)
                        break
                    if d or text is None:
                        yield chunk(d, None, event)
                    try:
                        event = await anext(stream)
                    except StopAsyncIteration:
                        return
                yield "data: [DONE]\n\n"
            finally:
                await stream.aclose()  # a client gone mid-stream cancels its request here

        return StreamingResponse(sse(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http: HTTPRequest):
        check_model(body.model)
        if isinstance(body.prompt, list) and body.prompt and isinstance(body.prompt[0], int):
            prompt = list(body.prompt)
        else:
            if tokenizer is None:
                raise APIError(400, "this model has no tokenizer: send the prompt as a list of token ids", param="prompt")
            prompt = tokenizer.encode(body.prompt if isinstance(body.prompt, str) else body.prompt[0])
        if not prompt:
            raise APIError(400, "prompt is empty after tokenization", param="prompt")
        req, stops = build(body, prompt, config.default_max_tokens)
        return await respond(http, body, req, stops, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, http: HTTPRequest):
        check_model(body.model)
        if tokenizer is None or not tokenizer.chat_template:
            raise APIError(400, "this model has no chat template; use /v1/completions", param="messages")
        try:
            prompt = tokenizer.encode_chat([{"role": m.role, "content": m.text()} for m in body.messages])
        except (TemplateError, ValueError, TypeError) as err:
            raise APIError(400, f"the chat template refused these messages: {err}", param="messages") from None
        req, stops = build(body, prompt, config.default_chat_max_tokens)
        return await respond(http, body, req, stops, chat=True)

    return app
