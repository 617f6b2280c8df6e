"""No request can hurt another in the engine: numerically extreme sampling settings, a row whose
step fails (its batch is split and rerun alone, exactly), and the per-step token budget."""

from __future__ import annotations

import pytest
import torch
from conftest import tri_tiny
from test_engine import collect, submit, wait_for

from trimode.decoding import GenerationConfig, decoder_for
from trimode.engine import Engine
from trimode.sampling import SamplingParams

MODES = ["ar", "linear-spec", "quadratic-spec", "diffusion", "auto"]


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tri_tiny(seed=2)
    torch.set_num_threads(threads)


def alone(model, mode, prompt, n, block=4, **kw):
    decoder = decoder_for("linear-spec" if mode == "auto" else mode, model)
    return decoder.generate([prompt], GenerationConfig(max_new_tokens=n, block_size=block, **kw)).sequences[0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sampling", [SamplingParams(temperature=1e-40), SamplingParams(temperature=0.7, top_p=1e-300)])
def test_a_request_with_extreme_sampling_settings_neither_fails_nor_fails_its_batch(model, mode, sampling):
    engine = Engine(model)
    try:
        victim, victim_box = submit(engine, [5, 6, 7], 24, mode)
        wait_for(lambda: victim.sent >= 2)
        _, poison_box = submit(engine, [5, 6, 7], 8, mode, sampling=sampling)
        poisoned, poison_end = collect(poison_box)
        victim_tokens, victim_end = collect(victim_box)
    finally:
        engine.close()
    assert (poison_end.kind, victim_end.kind) == ("done", "done"), (poison_end.message, victim_end.message)
    assert victim_tokens == alone(model, mode, [5, 6, 7], 24)
    if mode in ("ar", "linear-spec", "quadratic-spec", "auto"):  # a near-zero temperature and top_p are greedy
        assert poisoned == alone(model, mode, [5, 6, 7], 8)


class Exploding:
    """A stop condition that raises once its row has ``after`` tokens: a row whose step fails."""

    def __init__(self, after: int) -> None:
        self.after = after

    def __call__(self, tokens) -> bool:
        if len(tokens) >= self.after:
            raise RuntimeError("this row's step fails")
        return False


@pytest.mark.parametrize("mode", ["ar", "linear-spec", "diffusion"])
def test_a_failing_row_fails_alone_and_its_batch_mates_finish_exactly(model, mode):
    engine = Engine(model)
    try:
        greedy, greedy_box = submit(engine, [5, 6, 7], 30, mode)
        sampled, sampled_box = submit(engine, [8, 9], 30, mode, sampling=SamplingParams(temperature=0.8))  # no seed
        wait_for(lambda: greedy.sent >= 3 and sampled.sent >= 3)  # both have sent tokens before the failure
        _, bad_box = submit(engine, [5, 6, 7], 30, mode, stop=Exploding(after=6))
        outs = [collect(box) for box in (greedy_box, sampled_box, bad_box)]
        isolated = engine.counters["isolated"]
    finally:
        engine.close()
    (g, g_end), (s, s_end), (_, bad_end) = outs
    assert bad_end.kind == "error" and "this row's step fails" in bad_end.message
    assert (g_end.kind, s_end.kind) == ("done", "done"), (g_end.message, s_end.message)
    assert isolated == 3  # the batch was split once; each request reran alone
    assert g == alone(model, mode, [5, 6, 7], 30)
    # The sampled request was given a seed at submit, so its rerun drew what it had already sent.
    assert sampled.config.seeds is not None
    assert s == alone(model, mode, [8, 9], 30, sampling=SamplingParams(temperature=0.8), seeds=sampled.config.seeds)


def test_no_forward_carries_more_than_the_step_budget(model):
    engine = Engine(model, max_step_tokens=50)
    try:
        with pytest.raises(ValueError, match="puts 73 tokens in one forward, more than this server's max_step_tokens 50"):
            submit(engine, [5, 6], 4, "quadratic-spec", block=8)
        reqs = [submit(engine, [5 + i, 6], 12, "quadratic-spec", block=4) for i in range(4)]  # 21 tokens per row
        widest = 0
        while any(r.row is None or r.row.active for r, _ in reqs):
            rows = [b["rows"] for b in engine.metrics()["batches"]]
            widest = max([widest, *rows])
            if all(r.sent >= 12 for r, _ in reqs):
                break
        outs = [collect(box)[0] for _, box in reqs]
    finally:
        engine.close()
    assert widest <= 2  # 2 x 21 <= 50 < 3 x 21
    assert outs == [alone(model, "quadratic-spec", [5 + i, 6], 12) for i in range(4)]
