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
                    busiest[0] = max(busiest[0], http.get(srv.url + "/metrics").json()["cache_slots_in_use"])

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
        mismatches = []  # references computed while the server's thread setting holds
        for requests, outputs in zip(jobs, results):
            for (mode, prompt, n), got in zip(requests, outputs):
                config = GenerationConfig(max_new_tokens=n, block_size=4)
                alone = decoder_for("ar" if mode == "auto" else mode, model).generate([prompt], config).sequences[0]
                if got != alone:
                    mismatches.append((mode, prompt, got, alone))
    assert busiest[0] >= 8  # guard: requests really were batched together
    assert not mismatches, mismatches[:3]
