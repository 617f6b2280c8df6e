"""The engine without HTTP: rows joining mid-flight, the cached-token bound, a full queue,
cancellation, and the auto policy's choice of mode."""

from __future__ import annotations

import queue
import time

import pytest
import torch
from conftest import tri_tiny  # pytest puts tests/ on sys.path

from trimode.decoding import GenerationConfig, decoder_for
from trimode.engine import Engine, EngineFull, Request


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: intra-op threads only add spin-waiting on a busy machine
    yield tri_tiny(seed=2)
    torch.set_num_threads(threads)


def submit(engine, prompt, n, mode="ar", block=4, **kw):
    inbox = queue.SimpleQueue()
    req = Request(prompt, GenerationConfig(max_new_tokens=n, block_size=block, **kw), mode, inbox.put)
    engine.submit(req)
    return req, inbox


def collect(inbox, timeout=60):
    tokens = []
    while True:
        event = inbox.get(timeout=timeout)
        if event.kind == "tokens":
            tokens += event.tokens
        else:
            return tokens, event


def wait_for(predicate, timeout=20):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.mark.parametrize("mode", ["ar", "linear-spec", "quadratic-spec", "diffusion"])
def test_rows_joining_mid_flight_get_what_they_get_alone(model, mode):
    engine = Engine(model)
    try:
        first, first_box = submit(engine, [5, 6, 7], 60, mode)
        wait_for(lambda: first.sent >= 5)  # the first row is decoding when the others join
        later = [submit(engine, [9 + i] * (i + 1), 20 + i, mode) for i in range(3)]
        outputs = [collect(first_box)[0]] + [collect(box)[0] for _, box in later]
    finally:
        engine.close()
    decoder = decoder_for(mode, model)
    prompts = [([5, 6, 7], 60)] + [([9 + i] * (i + 1), 20 + i) for i in range(3)]
    for (prompt, n), got in zip(prompts, outputs):
        assert got == decoder.generate([prompt], GenerationConfig(max_new_tokens=n, block_size=4)).sequences[0]


def test_cached_token_bound_limits_running_requests(model):
    # Each request reserves 4 + 30 + 4 + 1 = 39 tokens: two fit under 80, the others wait.
    engine = Engine(model, max_cached_tokens=80)
    try:
        boxes = [submit(engine, [5, 6, 7, 8], 30)[1] for _ in range(5)]
        busiest = 0
        while any(box.empty() for box in boxes):
            busiest = max(busiest, engine.metrics()["active_requests"])
            time.sleep(0.002)
        results = [collect(box) for box in boxes]
    finally:
        engine.close()
    assert busiest <= 2 and all(len(tokens) == 30 for tokens, _ in results)
    with pytest.raises(ValueError, match="more than this server's max_cached_tokens 80"):
        Engine.submit(engine, Request([5] * 50, GenerationConfig(max_new_tokens=40), "ar", print))


def test_full_queue_is_refused_and_cancellation_frees_everything(model):
    engine = Engine(model, max_batch=1, max_waiting=2)
    try:
        running, box = submit(engine, [5, 6], 5000)
        wait_for(lambda: engine.metrics()["active_requests"] == 1)
        waiting = [submit(engine, [7], 10) for _ in range(2)]
        with pytest.raises(EngineFull, match="2 requests waiting"):
            submit(engine, [8], 10)
        for req, _ in [(running, box), *waiting]:
            engine.cancel(req)
        reasons = [collect(b)[1].finish_reason for b in [box] + [b for _, b in waiting]]
        assert reasons == ["cancelled"] * 3
        wait_for(lambda: engine.metrics()["cache_slots_in_use"] == 0)
        m = engine.metrics()
        assert (m["active_requests"], m["waiting_requests"], m["reserved_tokens"]) == (0, 0, 0)
        tokens, done = collect(submit(engine, [9], 4)[1])  # still serving
        assert len(tokens) == 4 and done.finish_reason == "length"
    finally:
        engine.close()


@pytest.mark.parametrize("spec_max_rows", [4, 0])
def test_auto_speculates_only_at_low_load(model, spec_max_rows):
    engine = Engine(model, spec_max_rows=spec_max_rows)
    try:
        tokens, done = collect(submit(engine, [5, 6, 7], 24, mode="auto")[1])
    finally:
        engine.close()
    kinds = set(done.usage["forwards"])
    # Alone, auto speculates first (then measures AR too); above the threshold it never speculates.
    assert ("verify" in kinds) == (spec_max_rows > 0) and "prefill" in kinds
    assert tokens == decoder_for("ar", model).generate([[5, 6, 7]], GenerationConfig(max_new_tokens=24)).sequences[0]


def test_auto_switches_mode_as_the_load_falls(model):
    """Four rows above the threshold decode by AR; once short ones leave, the long one speculates."""
    engine = Engine(model, spec_max_rows=1)
    try:
        _, long_box = submit(engine, [5, 6, 7], 40, mode="auto")
        short = [submit(engine, [8 + i], 3, mode="auto") for i in range(3)]
        tokens, done = collect(long_box)
        for _, box in short:
            collect(box)
    finally:
        engine.close()
    assert tokens == decoder_for("ar", model).generate([[5, 6, 7]], GenerationConfig(max_new_tokens=40)).sequences[0]
    assert done.usage["forwards"]["verify"] > 0  # speculated once alone


def test_auto_policy_follows_measured_throughput(model):
    from trimode.decoding.base import Batch
    from trimode.engine import AutoDecoder

    auto = AutoDecoder(model, spec_max_rows=2, probe_every=4)
    batch = Batch("auto", GenerationConfig(block_size=4))
    batch.demand = 1
    assert auto.choice(batch) is auto.spec  # nothing measured yet: speculation first
    auto.rate["linear-spec"] = 30.0
    assert auto.choice(batch) is auto.ar  # then AR gets measured
    auto.rate["ar"] = 50.0
    auto.low_steps = 1
    assert auto.choice(batch) is auto.ar  # AR is faster on this model: drafts do not pay
    auto.low_steps = 4
    assert auto.choice(batch) is auto.spec  # but speculation is re-measured now and then
    auto.rate["linear-spec"], auto.low_steps = 80.0, 5
    assert auto.choice(batch) is auto.spec
    batch.demand = 3
    assert auto.choice(batch) is auto.ar  # high load: always AR
