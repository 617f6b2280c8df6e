"""``/metrics`` in the Prometheus text format (``prometheus_client``), labelled by mode.

Each request is observed once, when the engine sends its last event (on the engine thread, from
the request's sink, so requests whose client left are counted too): requests by finish reason,
prompt and generated tokens, forwards by kind, tokens per forward, accepted draft lengths (one
observation per self-speculation cycle), queue wait (submitted -> admitted), time to first token,
time per output token after the first, and end-to-end latency. Gauges (running and waiting
requests, cache rows, cached and reserved tokens against the cache bound) are read from the
engine when scraped. The registry belongs to one server (no process-wide state), so several apps
in one process never share counts.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..engine import Engine, Event, Request

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PER_TOKEN = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5)
TPF = (0.5, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 16.0, 32.0)
ACCEPTED = tuple(float(n) for n in range(0, 17)) + (24.0, 32.0)


class Metrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("trimode_requests", "Requests finished, by mode and finish reason "
                                "(eos, stop, length, cancelled, error)", ["mode", "finish_reason"], registry=r)
        self.prompt_tokens = Counter("trimode_prompt_tokens", "Prompt tokens of finished requests", ["mode"], registry=r)
        self.generation_tokens = Counter("trimode_generation_tokens", "Tokens generated (EOS counted)", ["mode"],
                                         registry=r)
        self.forwards = Counter("trimode_forwards", "Model forwards whose output a request used, by kind "
                                "(a forward over a batch counts for each row)", ["mode", "kind"], registry=r)
        self.scored_tokens = Counter("trimode_scored_tokens", "Tokens read by logprobs scoring passes (prompt and completion: one causal pass each)",
                                     ["mode"], registry=r)
        self.tokens_per_forward = Histogram("trimode_tokens_per_forward", "Generated tokens per forward, per request",
                                            ["mode"], buckets=TPF, registry=r)
        self.accepted = Histogram("trimode_accepted_draft_length", "Draft tokens accepted per self-speculation cycle",
                                  ["mode"], buckets=ACCEPTED, registry=r)
        self.queue_wait = Histogram("trimode_queue_wait_seconds", "Submitted to admitted into a batch", ["mode"],
                                    buckets=LATENCY, registry=r)
        self.ttft = Histogram("trimode_time_to_first_token_seconds", "Submitted to first generated token", ["mode"],
                              buckets=LATENCY, registry=r)
        self.per_token = Histogram("trimode_time_per_output_token_seconds", "Time per generated token after the first",
                                   ["mode"], buckets=PER_TOKEN, registry=r)
        self.latency = Histogram("trimode_request_latency_seconds", "Submitted to last event", ["mode"],
                                 buckets=LATENCY, registry=r)
        r.register(_EngineState(engine))

    def observe(self, req: Request, event: Event) -> None:
        """Count one finished request (its "done" or "error" event)."""
        now, mode = time.perf_counter(), req.mode
        reason = "error" if event.kind == "error" else (event.finish_reason or "unknown")
        self.requests.labels(mode, reason).inc()
        self.latency.labels(mode).observe(now - req.submitted)
        self.prompt_tokens.labels(mode).inc(len(req.prompt))
        if event.scores is not None:
            self.scored_tokens.labels(mode).inc(len(event.scores.tokens))
        if req.admitted_at is not None:
            self.queue_wait.labels(mode).observe(req.admitted_at - req.submitted)
        row = req.row
        if row is None:
            return
        generated = len(row.tokens)
        self.generation_tokens.labels(mode).inc(generated)
        for kind, n in row.forwards.items():
            self.forwards.labels(mode, kind).inc(n)
        if row.nfe and generated:
            self.tokens_per_forward.labels(mode).observe(generated / row.nfe)
        for n in row.accepted_lengths:
            self.accepted.labels(mode).observe(n)
        if req.first_token_at is not None:
            self.ttft.labels(mode).observe(req.first_token_at - req.submitted)
            if generated > 1:
                self.per_token.labels(mode).observe((now - req.first_token_at) / (generated - 1))

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _EngineState:
    """Gauges read from the engine at scrape time, and its refusal counters."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self):
        return []  # collected at scrape time only

    def collect(self):
        m = self.engine.metrics()
        for name, key, doc in (
            ("trimode_requests_running", "active_requests", "Requests in a batch"),
            ("trimode_requests_waiting", "waiting_requests", "Requests waiting to be admitted"),
            ("trimode_cache_rows_in_use", "cache_slots_in_use", "Cache rows held by running requests"),
            ("trimode_cached_tokens", "cached_tokens", "Tokens held in the KV cache"),
            ("trimode_reserved_tokens", "reserved_tokens", "Cache tokens reserved by running requests"),
            ("trimode_max_cached_tokens", "max_cached_tokens", "The bound on reserved cache tokens"),
        ):
            yield GaugeMetricFamily(name, doc, value=m[key])
        usage = m["reserved_tokens"] / m["max_cached_tokens"] if m["max_cached_tokens"] else 0.0
        yield GaugeMetricFamily("trimode_cache_usage_ratio", "Reserved over the bound (0-1)", value=usage)
        rows = GaugeMetricFamily("trimode_batch_rows", "Rows per running batch", labels=["mode", "block_size"])
        for batch in m["batches"]:
            rows.add_metric([batch["mode"], str(batch["block_size"])], batch["rows"])
        yield rows
        refused = CounterMetricFamily("trimode_rejected_requests", "Requests refused with 503 (queue full)")
        refused.add_metric([], m["counters"].get("rejected_full", 0))
        yield refused
        for name, key, doc in (
            ("trimode_engine_steps", "steps", "Decoding steps the engine has run (one batch forward cycle each)"),
            ("trimode_isolated_requests", "isolated", "Requests rerun alone because their batch failed"),
        ):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], m["counters"].get(key, 0))
            yield counter
