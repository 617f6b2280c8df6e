"""``trimode serve`` in a process of its own, as a user starts it, for benchmarks that talk to it over HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

SERVED = "trimode"  # the model name the benchmarks serve under


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``trimode serve`` in a process of its own, up once /health answers."""

    def __init__(self, model: str, mode: str, device: str, log: Path, timeout: float = 600.0,
                 extra: Sequence[str] = ()) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trimode.cli", "serve", "--model", model, "--mode", mode, "--device", device,
             "--port", str(self.port), "--served-model-name", SERVED, "--max-batch", "8", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"trimode serve exited with {self.proc.returncode}; see {log}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.close()
        raise RuntimeError(f"trimode serve did not answer /health within {timeout:.0f} s; see {log}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
