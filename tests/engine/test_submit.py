"""A request the model cannot run is refused when it is submitted, never when it joins a batch
(where it would fail every request decoding with it)."""

from __future__ import annotations

import queue

import pytest
from conftest import tri_tiny  # pytest puts tests/ on sys.path

from trimode.decoding import GenerationConfig
from trimode.engine import Engine, Request


@pytest.fixture(scope="module")
def engines():
    tri, plain = Engine(tri_tiny(seed=4)), Engine(tri_tiny(seed=4, mask_token_id=None))
    yield tri, plain
    tri.close()
    plain.close()


def request(prompt, mode="ar", block=4):
    return Request(prompt, GenerationConfig(max_new_tokens=3, block_size=block), mode, queue.SimpleQueue().put)


@pytest.mark.parametrize("prompt, mode, block, message", [
    ([5, 96], "ar", 4, "outside the vocabulary"),
    ([], "ar", 4, "empty"),
    ([5, 6], "linear-spec", 1, "block_size >= 2"),
    ([5, 6], "fast", 4, "unknown mode 'fast'"),
])
def test_refused_at_submit(engines, prompt, mode, block, message):
    tri, _ = engines
    with pytest.raises(ValueError, match=message):
        tri.submit(request(prompt, mode, block))
    assert tri.metrics()["waiting_requests"] == 0


def test_a_mode_that_needs_a_mask_token_is_refused_on_a_plain_model(engines):
    _, plain = engines
    with pytest.raises(ValueError, match="needs a mask token"):
        plain.submit(request([5, 6], "diffusion"))
    inbox = queue.SimpleQueue()
    plain.submit(Request([5, 6], GenerationConfig(max_new_tokens=2), "auto", inbox.put))  # auto falls back to AR
    events = [inbox.get(timeout=60)]
    while events[-1].kind == "tokens":
        events.append(inbox.get(timeout=60))
    assert events[-1].kind == "done"


def test_a_suffix_request_gets_the_library_middle_and_bad_suffixes_are_refused(engines):
    from trimode.decoding.infill import infill

    tri, _ = engines
    config = GenerationConfig(max_new_tokens=6, block_size=8)
    inbox = queue.SimpleQueue()
    tri.submit(Request([5, 9, 14], config, "diffusion", inbox.put, suffix=[30, 31, 40]))
    events = [inbox.get(timeout=60)]
    while events[-1].kind == "tokens":
        events.append(inbox.get(timeout=60))
    got = [t for e in events if e.kind == "tokens" for t in e.tokens]
    assert got == infill(tri.model, [[5, 9, 14]], [[30, 31, 40]], config).middles[0]
    done = events[-1]
    assert done.kind == "done" and done.finish_reason == "length" and done.usage["completion_tokens"] == 6
    assert done.usage["nfe"] == sum(done.usage["forwards"].values()) >= 2
    with pytest.raises(ValueError, match="suffix has token ids outside"):
        tri.submit(Request([5, 9], config, "diffusion", inbox.put, suffix=[30, 96]))
