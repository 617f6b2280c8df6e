"""Schema-driven fuzz: random bodies built from the endpoints' fields (right and wrong types,
out-of-range values, unknown fields, random JSON) never get a 5xx, and the server keeps serving."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import tri_tiny  # pytest puts tests/ on sys.path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import LiveServer

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.just("tiny"),
)
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
FIELDS = {
    "model": st.one_of(st.just("tiny"), anything),
    "prompt": st.one_of(st.text(min_size=0, max_size=20), st.lists(st.integers(-5, 120), max_size=12), anything),
    "messages": st.one_of(
        st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "bot"]),
                                        "content": st.one_of(st.text(max_size=10), anything)}), max_size=3),
        anything),
    "max_tokens": st.one_of(st.integers(-3, 12), st.integers(200, 2**33), anything),
    "temperature": st.one_of(st.floats(-1, 3), anything),
    "top_p": st.one_of(st.floats(-0.5, 1.5), anything),
    "seed": st.one_of(st.integers(-10, 2**64), anything),
    "stop": st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=6), anything),
    "stream": st.one_of(st.booleans(), anything),
    "mode": st.one_of(st.sampled_from(["ar", "diffusion", "linear-spec", "quadratic-spec", "auto", "x"]), anything),
    "block_size": st.one_of(st.integers(-2, 9), anything),
    "threshold": st.one_of(st.floats(-1, 2), anything),
    "n": st.one_of(st.integers(0, 3), anything),
}
bodies = st.one_of(
    st.fixed_dictionaries({}, optional=FIELDS).map(lambda d: {**d, "max_tokens": 4} if d.get("max_tokens") == 12 else d),
    st.dictionaries(st.text(max_size=8), anything, max_size=4),
    anything,
)


@pytest.fixture(scope="module")
def server():
    with LiveServer(tri_tiny(seed=1), max_context=64) as srv:
        yield srv


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_fuzzed_bodies_never_get_a_5xx(server, path):
    http = httpx.Client(base_url=server.url, timeout=60)

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=bodies)
    def check(body):
        # json.dumps writes NaN/Infinity, which strict JSON parsers refuse: that is fuzz too.
        r = http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code < 500, (body, r.status_code, r.text)
        if r.status_code >= 400:
            assert r.json()["error"]["message"]

    check()
    raw = http.post(path, content=b"\xff\xfe{", headers={"content-type": "application/json"})
    assert raw.status_code == 400
    ok = http.post("/v1/completions", json={"model": "tiny", "prompt": "still up?", "max_tokens": 2})
    assert ok.status_code == 200 and http.get("/health").status_code == 200
    http.close()
