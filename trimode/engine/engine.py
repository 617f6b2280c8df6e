"""The engine: one background thread runs the model; requests join and leave between steps.

Requests with the same mode and forward-shaping settings (block size, thresholds) share a
:class:`~trimode.decoding.base.Batch`; each row keeps its own sampling settings, seed, token
budget, EOS and stop strings. Each loop iteration: take new requests and cancellations, remove
finished or cancelled rows (freeing their cache rows), admit waiting requests while their cache
reservation fits under ``max_cached_tokens`` and ``max_batch`` (a batched prefill per batch), then
run one step of one batch (round robin). Callers never wait on a model forward: they submit and
read events. A full waiting queue is refused at once (:class:`EngineFull`), never queued forever.

No request can hurt another. One forward carries at most ``max_step_tokens`` tokens (a batch's
rows times what each adds to a step; joining prompts together, though a single prompt always
fits), so a large block waits for room or is refused, never stalls or exhausts the server. A batch
whose prefill or step fails is split: each of its requests runs again alone from its prompt, and
only the one that fails alone gets the error. The rerun is exact because every sampled request
carries its own seed (one is drawn at submit when none is given) and a row's draws do not depend
on its batch; the tokens already sent are checked against the rerun, not sent twice.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import replace
from typing import Any

import torch

from ..decoding import MODES, decoder_for
from ..decoding.base import Batch, Decoder, ModeSettings, Row
from ..decoding.infill import infill
from ..decoding.score import score
from ..decoding.spec import spec_for, step_tokens_budget
from ..model.transformer import Transformer
from .auto import AutoDecoder
from .request import Event, Request

# Requests share a batch when their mode and forward-shaping settings agree; a request rerun alone
# after its batch failed has its own (the third element is its id).
Key = tuple[str, ModeSettings, int | None]
MISMATCH = "rerun-mismatch"  # a row's finish when its rerun alone parted from the tokens already sent


class EngineFull(Exception):
    """The waiting queue is full; the caller should retry later (HTTP 503)."""


class Engine:
    def __init__(
        self,
        model: Transformer,
        *,
        max_batch: int = 32,
        max_cached_tokens: int = 65536,
        max_waiting: int = 256,
        spec_max_rows: int = 2,
        max_step_tokens: int | None = None,
    ) -> None:
        if max_step_tokens is None:  # the budget of the model's device
            max_step_tokens = step_tokens_budget(next(model.parameters()).device.type)
        if max_batch < 1 or max_cached_tokens < 1 or max_waiting < 0 or max_step_tokens < 1:
            raise ValueError(
                f"engine limits must be positive: max_batch={max_batch}, max_cached_tokens={max_cached_tokens}, "
                f"max_waiting={max_waiting}, max_step_tokens={max_step_tokens}"
            )
        self.model = model
        self.max_batch, self.max_cached_tokens, self.max_waiting = max_batch, max_cached_tokens, max_waiting
        self.max_step_tokens = max_step_tokens
        self.decoders: dict[str, Decoder] = {m: decoder_for(m, model) for m in MODES}
        self.decoders["auto"] = AutoDecoder(model, spec_max_rows)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: deque[Request] = deque()
        self._batches: dict[Key, Batch] = {}
        self._running: dict[int, Request] = {}
        self._owner: dict[int, Request] = {}  # id(row) -> its request
        self._reserved = 0
        self._pending = 0  # submitted, not yet taken from the inbox (guarded by _lock)
        self._lock = threading.Lock()
        self._turn = 0
        self.counters: Counter = Counter()
        # Steps started between a cancel and the release of its rows, for the last cancellations:
        # rows leave at the next step boundary, so 0, or 1 when the cancel came as a step began.
        self.cancel_lags: deque[int] = deque(maxlen=256)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trimode-engine", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- caller side (any thread)
    def submit(self, request: Request) -> None:
        spec_for(request.mode, engine=True)  # a clear error for an unknown mode
        # Refused here, not when it joins a batch, where a bad request would fail its whole batch.
        decoder = self.decoders[request.mode]
        decoder.check_prompt(request.prompt)
        if request.suffix:
            decoder.check_prompt(request.suffix, "suffix")
        decoder.check_settings(request.config.settings)
        if request.reservation > self.max_cached_tokens:
            raise ValueError(
                f"request needs {request.reservation} cached tokens (prompt {len(request.prompt)} + max_tokens "
                f"{request.config.max_new_tokens} + block), more than this server's max_cached_tokens "
                f"{self.max_cached_tokens}"
            )
        if request.step_tokens > self.max_step_tokens:
            raise ValueError(
                f"mode {request.mode!r} at block_size {request.config.block_size} puts {request.step_tokens} tokens "
                f"in one forward, more than this server's max_step_tokens {self.max_step_tokens}; use a smaller block"
            )
        sampling = request.config.sampling
        if not sampling.greedy and sampling.seed is None and request.config.seeds is None:
            request.config = replace(request.config, seeds=(secrets.randbits(63),))  # so that a rerun is exact
        with self._lock:
            if self._pending + len(self._waiting) >= self.max_waiting:
                self.counters["rejected_full"] += 1
                raise EngineFull(
                    f"server at capacity: {self._pending + len(self._waiting)} requests waiting "
                    f"(max_waiting {self.max_waiting}); retry later"
                )
            self._pending += 1
        self._inbox.put(request)

    def cancel(self, request: Request) -> None:
        if request.cancel_step is None:
            request.cancel_step = self.counters["steps"]
        request.cancelled.set()
        self._inbox.put(None)  # wake the loop

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        self._thread.join(timeout=30)

    def metrics(self) -> dict[str, Any]:
        """A snapshot for /metrics (read without locking: values may be one step stale)."""
        for _ in range(100):  # the engine thread may change the dict while it is copied
            try:
                batches = list(self._batches.items())
                break
            except RuntimeError:
                continue
        else:
            batches = []
        return {
            "active_requests": len(self._running),
            "waiting_requests": len(self._waiting) + self._pending,
            "cache_slots_in_use": sum(len(b.rows) for _, b in batches),
            "cached_tokens": sum(sum(b.cache.lengths) for _, b in batches if b.cache is not None and b.rows),
            "reserved_tokens": self._reserved,
            "max_cached_tokens": self.max_cached_tokens,
            "max_batch": self.max_batch,
            "batches": [{"mode": key[0], "block_size": key[1].block_size, "rows": len(b.rows)} for key, b in batches if b.rows],
            "counters": dict(self.counters),
            "cancel_lag_steps": list(self.cancel_lags),
        }

    # ----------------------------------------------------------------- engine thread
    def _loop(self) -> None:
        # Cache tensors are created under inference mode, so every update must be made under it too.
        with torch.inference_mode():
            while not self._stop.is_set():
                idle = not self._running and not self._waiting
                self._take(block=idle)
                try:
                    self._reap()
                    self._admit()
                    self._step_one()
                except Exception as err:  # noqa: BLE001 -- a bug in bookkeeping fails the running requests, not the server
                    for key in list(self._batches):
                        self._drop(key, [], err)

    def _take(self, block: bool) -> None:
        try:
            item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
            while True:
                if item is not None:
                    with self._lock:
                        self._pending -= 1
                        self._waiting.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass

    def _finish(self, req: Request, reason: str) -> None:
        if reason == "cancelled" and req.cancel_step is not None:
            self.cancel_lags.append(self.counters["steps"] - req.cancel_step)
        self._owner.pop(id(req.row), None)
        self._running.pop(req.id, None)
        self._reserved -= req.reservation
        try:
            scores = self._score(req) if reason != "cancelled" else None
        except Exception as err:  # noqa: BLE001 -- a failed scoring pass fails this request only
            self.counters["errors"] += 1
            req.sink(Event("error", message=f"scoring failed: {type(err).__name__}: {err}"))
            return
        self.counters[reason] += 1
        req.sink(Event("done", finish_reason=reason, usage=req.usage(), scores=scores))

    def _score(self, req: Request):
        """The verifier's scores of what the request asked for (None when it asked for none): one
        causal forward over prompt + completion, on this thread, which owns the model."""
        if req.logprobs is None:
            return None
        completion = req.row.tokens if req.row is not None else []
        self.counters["scored_tokens"] += len(req.prompt) + len(completion)
        return score(self.model, req.prompt + completion, 0 if req.echo else len(req.prompt), req.logprobs)

    def _reap(self) -> None:
        for req in [r for r in self._waiting if r.cancelled.is_set()]:
            self._waiting.remove(req)
            self.counters["cancelled"] += 1
            self.cancel_lags.append(self.counters["steps"] - (req.cancel_step or self.counters["steps"]))
            req.sink(Event("done", finish_reason="cancelled", usage=req.usage()))
        for key, batch in list(self._batches.items()):
            leaving = [r for r in batch.rows if not r.active or self._owner[id(r)].cancelled.is_set()]
            batch.remove(leaving)
            for row in leaving:
                req = self._owner[id(row)]
                if row.finish == MISMATCH:
                    self._fail([req], RuntimeError(
                        "its batch failed, and the rerun alone did not reproduce the tokens already sent"))
                else:
                    self._finish(req, "cancelled" if row.active else str(row.finish))
            if not batch.rows:
                del self._batches[key]

    def _admit(self) -> None:
        joining: dict[Key, list[Request]] = {}
        slots = sum(len(b.rows) for b in self._batches.values())
        width = {key: len(b.rows) * self._owner[id(b.rows[0])].step_tokens for key, b in self._batches.items() if b.rows}
        prefill = 0  # prompt tokens joining this round (each batch's joiners are prefilled in one forward)
        while self._waiting and slots < self.max_batch:
            req = self._waiting[0]
            if not req.generate or req.suffix is not None:  # scoring only, or fill in the middle: no cache row, answered now
                self._waiting.popleft()
                req.admitted_at = time.perf_counter()
                self._running[req.id] = req
                if req.suffix is not None:
                    self._infill(req)
                else:
                    self._finish(req, "length")
                continue
            if self._reserved + req.reservation > self.max_cached_tokens:
                break  # first come, first served: wait for the head request to fit
            key = self._key(req)
            if width.get(key, 0) + req.step_tokens > self.max_step_tokens or (
                    prefill and prefill + len(req.prompt) > self.max_step_tokens):
                break  # its batch's steps (or this round's prefill) are full: it joins after some leave
            width[key] = width.get(key, 0) + req.step_tokens
            prefill += len(req.prompt)
            self._waiting.popleft()
            req.admitted_at = time.perf_counter()
            self._reserved += req.reservation
            self._running[req.id] = req
            joining.setdefault(key, []).append(req)
            slots += 1
        for key, reqs in joining.items():
            decoder = self.decoders[key[0]]
            batch = self._batches.get(key)
            try:
                if batch is None:
                    batch = self._batches[key] = decoder.open(key[1])
                rows = []
                for req in reqs:
                    req.row = Row(req.prompt, req.config)
                    self._owner[id(req.row)] = req
                    rows.append(req.row)
                decoder.join(batch, rows)
            except Exception as err:  # noqa: BLE001 -- a failed prefill fails this batch's requests, not the server
                self._drop(key, reqs, err)
                continue
            self._publish(reqs)

    def _infill(self, req: Request) -> None:
        try:
            result = infill(self.model, [req.prompt], [req.suffix], req.config)
        except Exception as err:  # noqa: BLE001 -- a failed infill fails this request only
            self._fail([req], err)
            return
        req.row = Row(req.prompt, req.config)
        req.row.tokens, req.row.forwards = result.middles[0], Counter(result.stats.forwards)
        self.counters["infills"] += 1
        self._publish([req])
        self._finish(req, "length")

    def _step_one(self) -> None:
        self._reap()  # a cancel that came during the admission's prefill frees its rows before the step
        ready = [(k, b) for k, b in self._batches.items() if b.rows and all(r.active for r in b.rows)]
        if not ready:
            return
        self._turn = (self._turn + 1) % len(ready)
        key, batch = ready[self._turn]
        batch.demand = sum(len(b.rows) for b in self._batches.values()) + len(self._waiting)
        self.counters["steps"] += 1
        try:
            self.decoders[key[0]].step(batch)
        except Exception as err:  # noqa: BLE001 -- a failing step fails its batch, not the server
            self._drop(key, [], err)
            return
        self._publish([self._owner[id(r)] for r in batch.rows])

    def _publish(self, reqs: list[Request]) -> None:
        now = time.perf_counter()
        for req in reqs:
            if req.replay is not None:  # rerun alone after its batch failed: already-sent tokens are checked
                if len(req.row.tokens) < len(req.replay):
                    continue
                if req.row.tokens[: len(req.replay)] != req.replay:
                    req.row.finish = MISMATCH  # failed in _reap, which takes it out of its batch
                    continue
                req.replay = None
            new = req.row.tokens[req.sent :]
            if new:
                req.first_token_at = req.first_token_at or now
                req.sent += len(new)
                req.sink(Event("tokens", tokens=new))

    def _drop(self, key: Key, reqs: list[Request], err: Exception) -> None:
        """Remove a failed batch: a request alone in it fails; several run again, each alone."""
        batch = self._batches.pop(key, None)
        others = [self._owner[id(r)] for r in batch.rows] if batch is not None else []
        hit = list({r.id: r for r in others + reqs}.values())
        if len(hit) == 1 or any(r.isolated for r in hit):
            self._fail(hit, err)
            return
        for req in reversed(hit):  # back to the head of the queue, in their order
            if req.row is not None:
                self._owner.pop(id(req.row), None)
                req.replay = req.row.tokens[: req.sent]
            self._running.pop(req.id, None)
            self._reserved -= req.reservation
            req.row, req.isolated = None, True
            self._waiting.appendleft(req)
        self.counters["isolated"] += len(hit)

    def _fail(self, reqs: list[Request], err: Exception) -> None:
        for req in reqs:
            if req.row is not None:
                self._owner.pop(id(req.row), None)
            self._running.pop(req.id, None)
            self._reserved -= req.reservation
            self.counters["errors"] += 1
            req.sink(Event("error", message=f"{type(err).__name__}: {err}"))

    @staticmethod
    def _key(req: Request) -> Key:
        return req.mode, req.config.settings, req.id if req.isolated else None
