"""The OpenAI-compatible HTTP API over an :class:`~trimode.engine.Engine`: the routes.

Handlers only validate and translate (:mod:`.translate`), then relay (:mod:`.format` builds what
is sent): the model runs on the engine thread, and each request reads its events from an asyncio
queue fed with ``call_soon_threadsafe``. Tokenizing and the chat template run in a worker thread,
so a long prompt never holds up the event loop (``/health`` included). A client that goes away
cancels its requests at once, streamed or not: a task waits on the connection for the disconnect
while tokens flow, and the engine frees the rows before its next step. Every refusal is an
OpenAI-style error object ``{"error": {"message", "type", "param", "code"}}``: 400 for bad input,
401 without the API key, 404 for an unknown model or route, 413 for a body over the limit, 503
when the waiting queue is full, 500 (the same shape) for a bug.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..engine import Engine, EngineFull, Event, Request
from .format import DONE, Reply, combine, error_body, model_card, model_list, sse
from .guard import Guard
from .metrics import CONTENT_TYPE, Metrics
from .schemas import ChatRequest, CompletionRequest
from .translate import APIError, ServerConfig, check_model, translate, validation_error

__all__ = ["APIError", "ServerConfig", "create_app", "error_response"]


def create_app(engine: Engine, tokenizer, eos_token_ids: tuple[int, ...], config: ServerConfig) -> FastAPI:
    app = FastAPI(title="trimode", version="0.1.0",
                  description="OpenAI-compatible server for tri-mode models (AR, diffusion, self-speculation, auto).")
    model = engine.model.config
    metrics = app.state.metrics = Metrics(engine)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc.errors())
        return error_response(err.status, err.message, err.param, err.code)

    @app.exception_handler(APIError)
    async def _api_error(_: HTTPRequest, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(http: HTTPRequest, exc: StarletteHTTPException) -> JSONResponse:
        message = f"no route {http.method} {http.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return error_response(exc.status_code, message, code="not_found" if exc.status_code == 404 else None)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: HTTPRequest, __: ClientDisconnect) -> JSONResponse:
        return JSONResponse({}, status_code=499)  # the client left while sending its body: nobody reads this

    @app.exception_handler(Exception)
    async def _bug(_: HTTPRequest, exc: Exception) -> JSONResponse:  # uvicorn still logs the traceback
        return error_response(500, f"internal error: {type(exc).__name__}", code="internal_error")

    app.add_middleware(Guard, allowed_hosts=config.allowed_hosts, api_key=config.api_key,
                       max_body_bytes=config.max_body_bytes)

    @app.get("/health")
    async def health() -> JSONResponse:
        ok = engine.alive
        return JSONResponse({"status": "ok" if ok else "engine stopped"}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus(http: HTTPRequest, format: str | None = None):
        """Prometheus text; the engine's JSON snapshot with ``Accept: application/json`` or ``?format=json``."""
        if format == "json" or "application/json" in http.headers.get("accept", ""):
            return JSONResponse(engine.metrics())
        if format not in (None, "prometheus"):
            raise APIError(400, f"format must be 'prometheus' or 'json', got {format!r}", param="format")
        return Response(metrics.text(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return model_list(config)

    @app.get("/v1/models/{model_id:path}")
    async def model_info(model_id: str) -> dict[str, Any]:
        check_model(model_id, config)
        return model_card(config)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http: HTTPRequest):
        return await answer(body, http, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, http: HTTPRequest):
        return await answer(body, http, chat=True)

    async def answer(body: CompletionRequest | ChatRequest, http: HTTPRequest, chat: bool):
        reqs, stops = await asyncio.to_thread(translate, body, tokenizer, model, config, eos_token_ids)
        first = Reply(chat, config.model_name)  # the id and time every choice's objects share
        replies = [Reply(chat, config.model_name, tokenizer, stops, first.id, first.created, index=i,
                         prompt=r.prompt, echo=r.echo, logprobs=r.logprobs) for i, r in enumerate(reqs)]
        return await respond(engine, http, reqs, replies, body.stream, metrics)

    return app


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status,
                        headers={"Retry-After": "1"} if status == 503 else None)


async def respond(engine: Engine, http: HTTPRequest, reqs: list[Request], replies: list[Reply], stream: bool,
                  metrics: Metrics | None = None):
    """Submit ``reqs`` (the prompts of one request) and answer with their replies, whole or streamed."""
    relays, watcher = [], None
    try:
        # Every prompt is submitted before any event is awaited, so that they join the engine's
        # batch together, and refusals are plain HTTP errors even when streaming.
        for req in reqs:
            relays.append(relay(engine, http, req, metrics))
        watcher = asyncio.ensure_future(cancel_on_disconnect(http, engine, reqs))
        firsts = [await anext(events, None) for events in relays]
        for event in firsts:
            if event is None:  # the client left before anything came
                raise APIError(499, "client closed the request")
            if event.kind == "error":
                raise APIError(500, f"generation failed: {event.message}")
    except BaseException:
        for req in reqs:  # those already submitted (cancelling one not submitted is harmless)
            engine.cancel(req)
        await cancel([watcher] if watcher else [])
        for events in relays:
            await events.aclose()
        raise
    if stream:  # from here the streaming response notices a disconnect and closes the relays
        await cancel([watcher])
        return StreamingResponse(stream_replies(replies, firsts, relays), media_type="text/event-stream")
    tasks = [asyncio.ensure_future(collect(r, e, f)) for r, e, f in zip(replies, relays, firsts)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        results = [task.result() for task in tasks]  # the first failure, if any, is raised here
    finally:
        gone = watcher.done() and not watcher.cancelled()
        await cancel([*tasks, watcher])
        for events in relays:
            await events.aclose()
    if gone or any(result is None for result in results):  # client gone
        return JSONResponse({}, status_code=499)
    return combine([reply.response(text, last, req.row.tokens if req.row else [])
                    for reply, req, (text, last) in zip(replies, reqs, results)])


async def collect(reply: Reply, events: AsyncIterator[Event], first: Event) -> tuple[str, Event] | None:
    """The whole text of one reply and its "done" event (None if the client went away)."""
    pieces, last = [reply.delta(first)], first
    if first.kind != "done":
        async for event in events:
            if event.kind == "error":
                raise APIError(500, f"generation failed: {event.message}")
            pieces.append(reply.delta(event))
            last = event
    return ("".join(pieces), last) if last.kind == "done" else None


async def stream_replies(replies: list[Reply], firsts: list[Event], relays: list[AsyncIterator[Event]]) -> AsyncIterator[str]:
    """The chunks of every reply as their events come (each chunk names its choice's index),
    then ``[DONE]`` once all are done."""
    merged: asyncio.Queue = asyncio.Queue()

    async def pump(i: int) -> None:
        try:
            async for event in relays[i]:
                await merged.put((i, event))
        finally:
            await merged.put((i, None))

    tasks = []
    try:
        for reply in replies:
            for chunk in reply.opening():
                yield sse(chunk)
        open_ = len(replies)
        for i, event in enumerate(firsts):
            for chunk in replies[i].chunks(event):
                yield sse(chunk)
            if event.kind != "tokens":
                open_ -= 1
        tasks = [asyncio.ensure_future(pump(i)) for i, e in enumerate(firsts) if e.kind == "tokens"]
        ended: set[int] = set()
        while open_:
            i, event = await merged.get()
            if event is None:  # this prompt's events ended without "done": the client is gone
                if i not in ended:
                    return
                continue
            for chunk in replies[i].chunks(event):
                yield sse(chunk)
            if event.kind != "tokens":
                ended.add(i)
                open_ -= 1
        yield DONE
    finally:
        await cancel(tasks)
        for events in relays:
            await events.aclose()  # a client gone mid-stream cancels its requests here


async def cancel_on_disconnect(http: HTTPRequest, engine: Engine, reqs: list[Request]) -> None:
    """Wait for the client to go away, then cancel ``reqs``. The body has been read, so the only
    message left on the connection is the disconnect; the engine sees the cancellation before its
    next step."""
    while (await http.receive())["type"] != "http.disconnect":
        pass
    for req in reqs:
        engine.cancel(req)


async def cancel(tasks: list[asyncio.Future]) -> None:
    """Cancel the tasks still running and wait until they have stopped."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def relay(engine: Engine, http: HTTPRequest, req: Request, metrics: Metrics | None = None) -> AsyncIterator[Event]:
    """Submit ``req`` now (refusals raise :class:`APIError` here) and return its events, until
    "done" or "error"; it is cancelled if the caller stops reading first (or the client
    disconnects while nothing arrives). ``metrics`` counts it when its last event is sent."""
    loop, inbox = asyncio.get_running_loop(), asyncio.Queue()

    def sink(event: Event) -> None:  # on the engine thread
        if metrics is not None and event.kind != "tokens":
            metrics.observe(req, event)
        loop.call_soon_threadsafe(inbox.put_nowait, event)

    req.sink = sink
    try:
        engine.submit(req)
    except EngineFull as err:
        raise APIError(503, str(err), code="overloaded") from None
    except ValueError as err:
        raise APIError(400, str(err)) from None
    return _events(engine, http, req, inbox)


async def _events(engine: Engine, http: HTTPRequest, req: Request, inbox: asyncio.Queue) -> AsyncIterator[Event]:
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
