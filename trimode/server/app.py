"""The OpenAI-compatible HTTP API over an :class:`~trimode.engine.Engine`: the routes.

Handlers only validate and translate (:mod:`.translate`), then relay (:mod:`.format` builds what
is sent): the model runs on the engine thread, and each request reads its events from an asyncio
queue fed with ``call_soon_threadsafe``. A client that goes away (closed stream, or a dropped
connection while waiting for a non-streamed reply) cancels its request, which frees its cache
rows at the engine's next step. Every refusal is an OpenAI-style error object
``{"error": {"message", "type", "param", "code"}}``: 400 for bad input, 404 for an unknown model,
503 when the waiting queue is full.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from ..engine import Engine, EngineFull, Event, Request
from .format import DONE, Reply, error_body, model_card, model_list, sse
from .schemas import ChatRequest, CompletionRequest
from .translate import APIError, ServerConfig, check_model, translate, validation_error

__all__ = ["APIError", "ServerConfig", "create_app", "error_response"]


def create_app(engine: Engine, tokenizer, eos_token_ids: tuple[int, ...], config: ServerConfig) -> FastAPI:
    app = FastAPI(title="trimode", version="0.1.0",
                  description="OpenAI-compatible server for tri-mode models (AR, diffusion, self-speculation, auto).")
    model = engine.model.config

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc.errors())
        return error_response(err.status, err.message, err.param, err.code)

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

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return model_list(config)

    @app.get("/v1/models/{model_id:path}")
    async def model_info(model_id: str) -> dict[str, Any]:
        check_model(model_id, config)
        return model_card(config)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http: HTTPRequest):
        req, stops = translate(body, tokenizer, model, config, eos_token_ids)
        return await respond(engine, http, req, Reply(False, config.model_name, tokenizer, stops), body.stream)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, http: HTTPRequest):
        req, stops = translate(body, tokenizer, model, config, eos_token_ids)
        return await respond(engine, http, req, Reply(True, config.model_name, tokenizer, stops), body.stream)

    return app


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status,
                        headers={"Retry-After": "1"} if status == 503 else None)


async def respond(engine: Engine, http: HTTPRequest, req: Request, reply: Reply, stream: bool):
    """Submit ``req`` and answer with its reply, whole or streamed."""
    events = relay(engine, http, req)
    first = await anext(events)  # submit now, so refusals are plain HTTP errors even when streaming
    if first.kind == "error":
        raise APIError(500, f"generation failed: {first.message}")
    if stream:
        return StreamingResponse(stream_reply(reply, first, events), media_type="text/event-stream")
    pieces, last = [reply.delta(first)], first
    async for event in events:
        if event.kind == "error":
            raise APIError(500, f"generation failed: {event.message}")
        pieces.append(reply.delta(event))
        last = event
    if last.kind != "done":  # client gone
        return JSONResponse({}, status_code=499)
    return reply.response("".join(pieces), last, req.row.tokens if req.row else [])


async def stream_reply(reply: Reply, first: Event, events: AsyncIterator[Event]) -> AsyncIterator[str]:
    try:
        for chunk in reply.opening():
            yield sse(chunk)
        event = first
        while True:
            for chunk in reply.chunks(event):
                yield sse(chunk)
            if event.kind != "tokens":
                break
            try:
                event = await anext(events)
            except StopAsyncIteration:
                return
        yield DONE
    finally:
        await events.aclose()  # a client gone mid-stream cancels its request here


async def relay(engine: Engine, http: HTTPRequest, req: Request) -> AsyncIterator[Event]:
    """Submit ``req`` and yield its events until "done" or "error"; cancel it if the caller stops
    reading first (or the client disconnects while nothing arrives)."""
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
