"""Reliability benchmark of ``trimode serve``: a live server process on a real checkpoint, attacked
the ways clients fail, while well-behaved clients check that their answers never change.

Phases, in order, with two greedy clients running throughout (each request in a mode among AR,
both self-speculations and diffusion, compared with the same request sent alone at the start):

1. ``--fuzz`` bodies, seeded: valid requests with fields set to hostile values (extreme numbers,
   wrong types, lone surrogates, booleans as ids, huge blocks, unknown fields), broken JSON,
   wrong methods and paths, oversized bodies. Counted by status; a 5xx or no answer within
   ``--hang-s`` is a failure.
2. ``--disconnects`` non-streamed requests closed mid-generation. Each must be cancelled (never
   finish); the server reports how many engine steps started after the cancel (rows leave at the
   next step boundary: 0, or 1 when the cancel came just as a step began), and the client sees the
   rows freed in /metrics.
3. ``--stalled`` sockets that send nothing, half the headers, or half a body: each must be closed
   by the server's read timeouts, while /health keeps answering.
4. ``--requests`` mixed small requests (modes, streaming, logprobs, chat) with the server's RSS
   sampled every 100.

The JSON line ends with ``ok``: no 5xx, no hang, every disconnect cancelled within one step (at most
one step started after it), every
stalled socket closed, every greedy answer unchanged.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from ..model.defaults import default_model_path
from ..runinfo import machine_info, write_result
from ..server.limits import BODY_TIMEOUT, HEADER_TIMEOUT, MAX_BODY_BYTES
from .live import SERVED, Server

CHECK_MODES = ["ar", "linear-spec", "quadratic-spec", "diffusion"]
CHECK_PROMPTS = ["The capital of France is", "def add(a, b):", "Water boils at", "Once upon a time"]
HOSTILE = [None, True, False, -1, 0, 1, 3, 2**31, 2**63, -(2**63), 10**400, 1e308, -1e308, 1e-300, 1e-40, 5e-324,
           0.5, "", "x", "1", "\ud800", "a\udfffb", [], [True, False], [[]], [1] * 70, [[5]] * 65, {}, {"a": 1},
           "a" * 300, ["\ud800"], [-1], [10**9], [5.0], "ar", "quadratic-spec", "nope", 255, 256, 16, 17]
FIELDS = ["model", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "n", "logprobs", "echo",
          "mode", "block_size", "threshold", "user", "presence_penalty", "stream_options", "suffix"]
CHAT_FIELDS = ["messages", "max_completion_tokens", "logprobs", "top_logprobs", "max_tokens", "temperature",
               "top_p", "mode", "block_size", "stop", "stream", "seed"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fuzz_case(rng: random.Random) -> tuple[str, str, bytes, str]:
    """(method, path, body, content type) of one hostile request."""
    chat = rng.random() < 0.35
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body: dict[str, Any] = ({"model": SERVED, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
                            if chat else {"model": SERVED, "prompt": rng.choice(CHECK_PROMPTS), "max_tokens": 2})
    kind = rng.random()
    if kind < 0.6:  # hostile values in known fields (max_tokens stays small when valid: bounded cost)
        for _ in range(rng.randint(1, 3)):
            field = rng.choice(CHAT_FIELDS if chat else FIELDS)
            value = rng.choice(HOSTILE)
            if field in ("max_tokens", "max_completion_tokens") and isinstance(value, int) and 4 < value < 10**6:
                value = -value
            body[field] = value
    elif kind < 0.7:
        body[rng.choice(["tempreature", "prompts", "foo", "\ud800", ""])] = 1
    elif kind < 0.75:
        body.pop("model")
    raw = json.dumps(body).encode()
    if 0.75 <= kind < 0.85:  # broken bytes
        raw = rng.choice([raw[: rng.randint(0, len(raw))], b"\xff\xfe" + raw, b"[" * 10000 + b"]" * 10000,
                          bytes(rng.randrange(256) for _ in range(64)), b"null", b"[]", b"\"text\"",
                          raw.replace(b"2", b"2" * 5000)])
    method, ctype = "POST", "application/json"
    if 0.85 <= kind < 0.92:
        method, path = rng.choice([("GET", path), ("PUT", path), ("DELETE", "/v1/models"), ("GET", "/v1/nothing"),
                                   ("GET", "/v1/models/" + "x" * 2000), ("POST", "/health"), ("GET", "/metrics?format=x")])
    elif kind >= 0.92:
        ctype = rng.choice(["text/plain", "application/x-www-form-urlencoded", ""])
    if rng.random() < 0.02:
        raw = b"{" + b" " * (MAX_BODY_BYTES + 2**20) + b"}"  # over the body limit
    return method, path, raw, ctype


class Checkers:
    """Greedy clients that keep asking known questions and compare each answer with the one given alone."""

    def __init__(self, url: str, n: int, new_tokens: int) -> None:
        self.url, self.new_tokens = url, new_tokens
        self.cases = [(m, p) for m in CHECK_MODES for p in CHECK_PROMPTS]
        self.expected = {case: self.ask(httpx.Client(timeout=300), *case) for case in self.cases}
        self.checks, self.mismatches, self.errors = 0, [], []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(n)]

    def ask(self, http: httpx.Client, mode: str, prompt: str) -> str:
        r = http.post(self.url + "/v1/completions", json={"model": SERVED, "prompt": prompt, "mode": mode,
                                                           "max_tokens": self.new_tokens, "temperature": 0})
        r.raise_for_status()
        return r.json()["choices"][0]["text"]

    def run(self, i: int) -> None:
        rng, http = random.Random(i), httpx.Client(timeout=300)
        while not self.stop.is_set():
            case = rng.choice(self.cases)
            try:
                got = self.ask(http, *case)
            except httpx.HTTPError as err:
                self.errors.append(f"{case}: {err}")
                continue
            self.checks += 1
            if got != self.expected[case]:
                self.mismatches.append({"case": case, "alone": self.expected[case], "under_load": got})

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=300)


def fuzz(url: str, n: int, seed: int, hang_s: float, workers: int = 4) -> dict[str, Any]:
    rng = random.Random(seed)
    cases = [fuzz_case(rng) for _ in range(n)]
    statuses: Counter = Counter()
    failures: list[dict[str, Any]] = []
    lock, progress = threading.Lock(), tqdm(total=n, desc="fuzz", leave=False)
    start = time.perf_counter()

    def worker(k: int) -> None:
        with httpx.Client(timeout=hang_s) as http:
            for method, path, raw, ctype in cases[k::workers]:
                try:
                    r = http.request(method, url + path, content=raw, headers={"content-type": ctype} if ctype else {})
                    status, shape = r.status_code, r.status_code < 400 or _error_shaped(r)
                except httpx.TimeoutException:
                    status, shape = "hang", False
                except httpx.HTTPError as err:
                    status, shape = f"transport: {type(err).__name__}", False
                with lock:
                    statuses[str(status)] += 1
                    if not shape or str(status).startswith("5"):
                        failures.append({"status": status, "method": method, "path": path[:80], "body": raw[:200].decode("utf-8", "replace")})
                    progress.update()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    progress.close()
    five = sum(v for k, v in statuses.items() if k.startswith("5"))
    return {"sent": n, "seconds": round(time.perf_counter() - start, 1), "statuses": dict(sorted(statuses.items())),
            "5xx": five, "hangs": statuses.get("hang", 0), "not_openai_shaped_or_failed": failures[:20],
            "failures": len(failures)}


def _error_shaped(r: httpx.Response) -> bool:
    try:
        error = r.json()["error"]
        return isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error)
    except (ValueError, KeyError, TypeError):
        return r.status_code == 499


def engine_state(http: httpx.Client, url: str) -> dict[str, Any]:
    return http.get(url + "/metrics", params={"format": "json"}).json()


def disconnects(url: str, port: int, n: int, seed: int) -> dict[str, Any]:
    rng, http = random.Random(seed), httpx.Client(timeout=60)
    latencies, lags, lost = [], [], 0
    for _ in tqdm(range(n), desc="disconnects", leave=False):
        before = engine_state(http, url)["counters"].get("cancelled", 0)  # only this phase cancels
        body = json.dumps({"model": SERVED, "prompt": rng.choice(CHECK_PROMPTS), "max_tokens": 200, "temperature": 0,
                           "mode": rng.choice(["ar", "linear-spec"])}).encode()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(rng.uniform(0.3, 1.2))  # tokens are flowing (200 of them take several seconds)
        sock.close()
        closed = time.perf_counter()
        while True:
            state = engine_state(http, url)
            if state["counters"].get("cancelled", 0) > before:
                latencies.append((time.perf_counter() - closed) * 1000)
                lags.append(state["cancel_lag_steps"][-1])
                break
            if time.perf_counter() - closed > 30:  # it ran on (or finished) although its client had left
                lost += 1
                break
            time.sleep(0.002)
    return {"n": n, "cancelled": len(lags), "not_cancelled_in_30s": lost,
            "lag_steps_max": max(lags, default=None), "lag_steps_counts": dict(Counter(lags)),
            "client_seen_ms_p50": round(statistics.median(latencies), 1) if latencies else None,
            "client_seen_ms_max": round(max(latencies), 1) if latencies else None}


def stalled(url: str, port: int, n: int, header_timeout: float, body_timeout: float) -> dict[str, Any]:
    sends = [b"", b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Len",
             b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: 500\r\n\r\n{\"model\": \"trimode\", \"prompt\": \"He"]
    socks, closed_after = [], {}
    start = time.perf_counter()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(sends[i % 3])
        s.setblocking(False)
        socks.append(s)
    limit = max(header_timeout, body_timeout) + 10
    health = []
    while len(closed_after) < n and time.perf_counter() - start < limit:
        for i, s in enumerate(socks):
            if i in closed_after:
                continue
            try:
                data = s.recv(65536)
                if not data:
                    closed_after[i] = time.perf_counter() - start
            except BlockingIOError:
                pass
            except OSError:
                closed_after[i] = time.perf_counter() - start
        t = time.perf_counter()
        httpx.get(url + "/health", timeout=10)
        health.append((time.perf_counter() - t) * 1000)
        time.sleep(0.2)
    for s in socks:
        s.close()
    by_kind = {kind: [round(closed_after[i], 1) for i in range(kind, n, 3) if i in closed_after]
               for kind in range(3)}
    return {"n": n, "closed": len(closed_after), "header_timeout_s": header_timeout, "body_timeout_s": body_timeout,
            "closed_after_s_max": {name: max(v, default=None) for name, v in
                                   zip(["nothing", "half_headers", "half_body"], by_kind.values())},
            "health_ms_max_meanwhile": round(max(health, default=0), 1)}


def rss_run(url: str, pid: int, n: int, seed: int) -> dict[str, Any]:
    rng, http = random.Random(seed), httpx.Client(timeout=300)
    samples, errors = [round(rss_mb(pid), 1)], 0
    for i in tqdm(range(n), desc="rss", leave=False):
        mode, prompt = rng.choice(CHECK_MODES + ["auto"]), rng.choice(CHECK_PROMPTS)
        kind = i % 4
        if kind == 3:
            r = http.post(url + "/v1/chat/completions", json={"model": SERVED, "mode": mode, "max_tokens": 4,
                                                               "messages": [{"role": "user", "content": prompt}]})
        else:
            body = {"model": SERVED, "prompt": prompt, "mode": mode, "max_tokens": 4, "stream": kind == 1,
                    **({"logprobs": 2, "echo": True} if kind == 2 else {})}
            r = http.post(url + "/v1/completions", json=body)
        errors += r.status_code != 200
        if (i + 1) % 100 == 0:
            samples.append(round(rss_mb(pid), 1))
    return {"requests": n, "errors": errors, "rss_mb_every_100": samples,
            "growth_mb_after_first_100": round(samples[-1] - samples[1], 1) if len(samples) > 2 else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trimode bench serve-faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint to serve (default: the bundled default model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--fuzz", type=int, default=1000)
    p.add_argument("--disconnects", type=int, default=50)
    p.add_argument("--stalled", type=int, default=100)
    p.add_argument("--requests", type=int, default=1000, help="requests of the RSS phase")
    p.add_argument("--checkers", type=int, default=2, help="greedy clients running throughout")
    p.add_argument("--check-tokens", type=int, default=12)
    p.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT)
    p.add_argument("--body-timeout", type=float, default=BODY_TIMEOUT)
    p.add_argument("--hang-s", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="say the machine had nothing else running")
    p.add_argument("--out", default=None, help="write the JSON result here too")
    args = p.parse_args(argv)
    model = args.model or str(default_model_path())
    log = Path(tempfile.mkdtemp(prefix="trimode-serve-faults-")) / "serve.log"
    server = Server(model, "ar", args.device, log, extra=["--header-timeout", str(args.header_timeout),
                                                        "--body-timeout", str(args.body_timeout)])
    started = time.perf_counter()
    try:
        with Checkers(server.url, args.checkers, args.check_tokens) as checkers:
            result: dict[str, Any] = {"fuzz": fuzz(server.url, args.fuzz, args.seed, args.hang_s)}
            result["disconnects"] = disconnects(server.url, server.port, args.disconnects, args.seed)
            result["stalled"] = stalled(server.url, server.port, args.stalled, args.header_timeout, args.body_timeout)
            result["rss"] = rss_run(server.url, server.proc.pid, args.requests, args.seed)
        result["greedy_under_fire"] = {"checks": checkers.checks, "mismatches": checkers.mismatches[:10],
                                       "n_mismatches": len(checkers.mismatches), "errors": checkers.errors[:10]}
        alive = server.proc.poll() is None
    finally:
        server.close()
    d, s, g = result["disconnects"], result["stalled"], result["greedy_under_fire"]
    ok = (alive and result["fuzz"]["5xx"] == 0 and result["fuzz"]["hangs"] == 0 and result["fuzz"]["failures"] == 0
          and d["cancelled"] == d["n"] and (d["lag_steps_max"] or 0) <= 1 and s["closed"] == s["n"]
          and g["n_mismatches"] == 0 and not g["errors"] and result["rss"]["errors"] == 0)
    out = {"bench": "serve-faults", "model": model, "device": args.device, "quiet": args.quiet, **result,
           "server_alive_at_end": alive, "seconds": round(time.perf_counter() - started, 1), "ok": ok,
           "machine": machine_info(), "command": "trimode bench serve-faults " + " ".join(argv or [])}
    f = result["fuzz"]
    print(f"{'phase':<12} result")
    print(f"{'fuzz':<12} {f['sent']} bodies in {f['seconds']} s: {f['statuses']}; 5xx {f['5xx']}, hangs {f['hangs']}")
    print(f"{'disconnect':<12} {d['cancelled']}/{d['n']} cancelled, steps after cancel {d['lag_steps_counts']}, "
          f"seen by the client in {d['client_seen_ms_p50']} ms (max {d['client_seen_ms_max']})")
    print(f"{'stalled':<12} {s['closed']}/{s['n']} closed; after (s) {s['closed_after_s_max']}; /health max "
          f"{s['health_ms_max_meanwhile']} ms meanwhile")
    print(f"{'rss':<12} MB every 100 requests {result['rss']['rss_mb_every_100']}")
    print(f"{'greedy':<12} {g['checks']} answers under fire, {g['n_mismatches']} differ from alone, "
          f"{len(g['errors'])} errors")
    print(f"{'ok':<12} {ok}")
    write_result(out, args.out)
    return 0 if ok else 1
