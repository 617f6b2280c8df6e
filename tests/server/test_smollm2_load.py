"""The 32 clients x 10 requests check on the real SmolLM2-135M-Instruct (slow): through the HTTP
server, greedy chat completions in AR, linear self-speculation and auto mode, each equal to the
same request decoded alone."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from live_server import LiveServer

from trimode.decoding import GenerationConfig, decoder_for

pytestmark = pytest.mark.slow
QUESTIONS = ["What is 2+2?", "Name a color.", "Say hello.", "Who wrote Hamlet?", "What is water made of?",
             "Give me a fruit.", "What day follows Monday?", "Define gravity.", "Count to three.", "Capital of Italy?"]
MODES = ["ar", "linear-spec", "auto"]
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def smollm2(default_model):
    """The default model with <empty_output> as its mask token: the session's shared load when that
    is its mask token already (the shipped delta's), else a load of its own to change."""
    from trimode.model import load
    from trimode.model.convert import resolve_token, set_mask_token
    from trimode.model.defaults import default_model_path

    mask = resolve_token(default_model.tokenizer, "<empty_output>")
    if default_model.config.mask_token_id == mask and default_model.config.block_size is not None:
        return default_model  # set_mask_token would change nothing
    loaded = load(default_model_path())
    set_mask_token(loaded.model, mask)
    return loaded


def test_32_clients_greedy_equal_alone_on_smollm2(smollm2):
    rng = random.Random(3)
    jobs = [[(rng.choice(MODES), rng.randrange(len(QUESTIONS))) for _ in range(10)] for _ in range(32)]
    with LiveServer(smollm2.model, eos=smollm2.eos_token_ids, max_context=2048, block_size=8,
                    tokenizer=smollm2.tokenizer) as srv:
        def client(requests):
            with httpx.Client(timeout=600) as http:
                out = []
                for mode, q in requests:
                    r = http.post(srv.url + "/v1/chat/completions", json={
                        "model": "tiny", "messages": [{"role": "user", "content": QUESTIONS[q]}],
                        "max_tokens": NEW_TOKENS, "temperature": 0, "mode": mode})
                    assert r.status_code == 200, r.text
                    out.append(r.json()["choices"][0]["token_ids"])
                return out

        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(client, jobs))
        config = GenerationConfig(max_new_tokens=NEW_TOKENS, eos_token_ids=smollm2.eos_token_ids)
        # Each question decoded alone, the ten in one batch (a batch gives each row what it gets
        # alone: tests/test_smollm2.py::test_batch_of_real_prompts_equals_single).
        prompts = [smollm2.tokenizer.encode_chat([{"role": "user", "content": text}]) for text in QUESTIONS]
        alone = dict(enumerate(decoder_for("ar", smollm2.model).generate(prompts, config).sequences))
    mismatches = [(mode, QUESTIONS[q], got, alone[q])
                  for requests, outputs in zip(jobs, results) for (mode, q), got in zip(requests, outputs)
                  if got != alone[q]]
    assert not mismatches, f"{len(mismatches)} of 320 differ, e.g. {mismatches[:3]}"
