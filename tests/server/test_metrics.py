# ruff: noqa: F811 -- the fixtures imported from live_server are pytest fixtures, named as test arguments
"""``/metrics`` in the Prometheus text format: what prometheus_client's own parser reads back,
labelled by mode, counting each finished request once; the engine's JSON behind Accept or
?format=json."""

from __future__ import annotations

import httpx
import pytest
from conftest import tri_tiny  # pytest puts tests/ on sys.path
from live_server import LiveServer, model, server  # noqa: F401 -- shared fixtures; tests/server is on sys.path
from prometheus_client.parser import text_string_to_metric_families


def scrape(server) -> dict[tuple[str, tuple], float]:
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def test_requests_tokens_forwards_and_latencies_by_mode(server):
    before = scrape(server)
    for mode, n in (("ar", 2), ("linear-spec", 1)):
        for _ in range(n):
            body = {"model": "tiny", "prompt": "Hello", "max_tokens": 8, "temperature": 0, "mode": mode, "block_size": 4}
            assert httpx.post(server.url + "/v1/completions", json=body, timeout=60).status_code == 200
    m = scrape(server)

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return m.get(key, 0.0) - before.get(key, 0.0)

    assert grew("trimode_requests_total", mode="ar", finish_reason="length") == 2
    assert grew("trimode_requests_total", mode="linear-spec", finish_reason="length") == 1
    assert grew("trimode_generation_tokens_total", mode="ar") == 16
    assert grew("trimode_prompt_tokens_total", mode="ar") == 10
    assert grew("trimode_forwards_total", mode="ar", kind="prefill") == 2
    assert grew("trimode_forwards_total", mode="ar", kind="decode") == 14
    assert grew("trimode_tokens_per_forward_count", mode="ar") == 2
    assert grew("trimode_tokens_per_forward_sum", mode="ar") == pytest.approx(2.0)
    assert grew("trimode_accepted_draft_length_count", mode="linear-spec") >= 1
    assert grew("trimode_accepted_draft_length_count", mode="ar") == 0
    for name in ("trimode_queue_wait_seconds", "trimode_time_to_first_token_seconds",
                 "trimode_time_per_output_token_seconds", "trimode_request_latency_seconds"):
        assert grew(f"{name}_count", mode="ar") == 2, name
        assert m[(f"{name}_bucket", (("le", "+Inf"), ("mode", "ar")))] >= 2
    for gauge in ("trimode_requests_running", "trimode_requests_waiting", "trimode_cache_rows_in_use",
                  "trimode_cached_tokens", "trimode_reserved_tokens", "trimode_cache_usage_ratio"):
        assert m[(gauge, ())] == 0, gauge  # nothing runs between requests
    assert m[("trimode_max_cached_tokens", ())] == server.engine.max_cached_tokens


def test_scoring_and_refusals_are_counted(server):
    before = scrape(server)
    scored = {"model": "tiny", "prompt": "Hello", "max_tokens": 4, "logprobs": 1}
    assert httpx.post(server.url + "/v1/completions", json=scored, timeout=60).status_code == 200
    m = scrape(server)
    key = ("trimode_scored_tokens_total", (("mode", "ar"),))
    assert m[key] - before.get(key, 0.0) == 9  # the scoring pass reads prompt (5) + completion (4)
    assert ("trimode_rejected_requests_total", ()) in m


def test_the_json_snapshot_stays_behind_accept_or_format(server):
    as_json = httpx.get(server.url + "/metrics", headers={"accept": "application/json"}).json()
    assert as_json["max_batch"] == server.engine.max_batch and "counters" in as_json
    assert httpx.get(server.url + "/metrics?format=json").json().keys() == as_json.keys()
    r = httpx.get(server.url + "/metrics?format=xml")
    assert r.status_code == 400 and "format must be 'prometheus' or 'json'" in r.json()["error"]["message"]


def test_a_full_queue_counts_its_refusals():
    with LiveServer(tri_tiny(seed=0), max_context=64, max_waiting=0) as full:
        r = httpx.post(full.url + "/v1/completions", json={"model": "tiny", "prompt": "Hi", "max_tokens": 2}, timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert scrape(full)[("trimode_rejected_requests_total", ())] == 1
