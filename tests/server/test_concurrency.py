"""32 concurrent clients x 10 requests, mixed modes and lengths: no errors, and every greedy
output equals the same request decoded alone (rows join and leave the batches between steps)."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import tri_tiny  # pytest puts tests/ on sys.path
from live_server import LiveServer

from trimode.decoding import GenerationConfig, decoder_for

MODES = ["ar", "linear-spec", "quadratic-spec", "diffusion", "auto"]
CLIENTS, PER_CLIENT = 32, 10


@pytest.fixture(scope="module")
def model():
    return tri_tiny(seed=0)


def test_concurrent_greedy_outputs_equal_single(model):
    rng = random.Random(7)
    jobs = [
        [(rng.choice(MODES), [rng.randrange(4, 96) for _ in range(rng.randint(1, 24))], rng.randint(3, 14))
         for _ in range(PER_CLIENT)]
        for _ in range(CLIENTS)
    ]
    with LiveServer(model, max_context=256) as srv:
        busiest, stop = [0], threading.Event()

        def watch():
            with httpx.Client() as http:
                while not stop.is_set():
                    busiest[0] = max(busiest[0], http.get(srv.url + "/metrics?format=json").json()["cache_slots_in_use"])

        def client(requests):
            out = []
            with httpx.Client(timeout=120) as http:
                for mode, prompt, n in requests:
                    r = http.post(srv.url + "/v1/completions", json={
                        "model": "tiny", "prompt": prompt, "max_tokens": n, "temperature": 0, "mode": mode,
                        "block_size": 4})
                    assert r.status_code == 200, r.text
                    out.append(r.json()["choices"][0]["token_ids"])
            return out

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(client, jobs))
        stop.set()
        watcher.join()
        assert srv.engine.metrics()["counters"].get("errors", 0) == 0
        # References computed while the server's thread setting holds: each request's own decoding
        # (its mode, its max_tokens), with the requests that share both decoded in one batch, since
        # a batch gives every row what it gets alone (tests/decoding/test_properties.py).
        groups: dict[tuple[str, int], list[list[int]]] = {}
        for mode, prompt, n in (request for requests in jobs for request in requests):
            groups.setdefault(("ar" if mode == "auto" else mode, n), []).append(prompt)
        references = {}
        for (mode, n), prompts in groups.items():
            config = GenerationConfig(max_new_tokens=n, block_size=4)
            for prompt, seq in zip(prompts, decoder_for(mode, model).generate(prompts, config).sequences):
                references[mode, n, tuple(prompt)] = seq
        mismatches = []
        for requests, outputs in zip(jobs, results):
            for (mode, prompt, n), got in zip(requests, outputs):
                alone = references["ar" if mode == "auto" else mode, n, tuple(prompt)]
                if got != alone:
                    mismatches.append((mode, prompt, got, alone))
    assert busiest[0] >= 8  # guard: requests really were batched together
    assert not mismatches, mismatches[:3]
