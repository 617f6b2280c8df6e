"""A real uvicorn server on a free port, in a thread, serving a tiny tri-mode model with a
character-level tokenizer and a small chat template (tests only)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import tokenizers
import torch
import uvicorn
from tokenizers import decoders, models

from trimode.engine import Engine
from trimode.server.app import ServerConfig, create_app
from trimode.server.http import uvicorn_config
from trimode.tokenizer import Tokenizer

SPECIALS = ["<pad>", "<bos>", "<eos>", "<mask>"]
TEMPLATE = (
    "{% for m in messages %}<bos>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<bos>assistant: {% endif %}"
)


def char_tokenizer() -> Tokenizer:
    """One token per printable ASCII character (ids 4..95) after the four specials of tri_tiny."""
    vocab = {t: i for i, t in enumerate(SPECIALS + [chr(c) for c in range(32, 32 + 92)])}
    backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    backend.add_special_tokens(SPECIALS)
    backend.decoder = decoders.Fuse()
    return Tokenizer(backend, bos_token="<bos>", eos_token="<eos>", chat_template=TEMPLATE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, model, *, eos=(), max_context=256, mode="ar", block_size=4, tokenizer=None,
                 server_kw=None, timeouts=None, **engine_kw) -> None:
        self.engine = Engine(model, **engine_kw)
        self.config = ServerConfig(**{"model_name": "tiny", "mode": mode, "block_size": block_size,
                                      "max_context": max_context, "max_prompt_tokens": max_context - 1,
                                      **(server_kw or {})})
        self.tokenizer = tokenizer or char_tokenizer()
        app = create_app(self.engine, self.tokenizer, tuple(eos), self.config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", self.port, log_level="warning", **(timeouts or {})))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        # The tiny model gains nothing from intra-op threads, and on a busy machine their
        # spin-waiting makes every forward many times slower.
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.engine.close()
        torch.set_num_threads(self.threads)


# The tiny model, live server and openai client the API tests share: a test module imports them
# (`from live_server import client, model, server`) and gets one of each per module.
@pytest.fixture(scope="module")
def model():
    from conftest import tri_tiny  # tests/conftest.py

    return tri_tiny(seed=0)


@pytest.fixture(scope="module")
def server(model):
    with LiveServer(model, max_context=256) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
