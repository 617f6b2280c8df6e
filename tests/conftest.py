"""Shared test fixtures: the publisher's golden files and small models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("TRIMODE_FIXTURES", REPO.parent / "shared" / "fixtures"))
NLD_TINY = FIXTURES / "nld-tiny"


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"golden fixtures not found at {path}: clone the repository with ../shared beside it "
            "or set TRIMODE_FIXTURES"
        )
    return path


@pytest.fixture(scope="session")
def nld_tiny_dir() -> Path:
    return _require(NLD_TINY)


@pytest.fixture(scope="session")
def golden(nld_tiny_dir: Path) -> dict:
    return json.loads((nld_tiny_dir / "golden.json").read_text())


@pytest.fixture(scope="session")
def tensors(nld_tiny_dir: Path) -> dict:
    """The reference's stored logits and training-forward inputs (forward_logits.safetensors)."""
    from safetensors.torch import load_file

    return load_file(str(nld_tiny_dir / "forward_logits.safetensors"))


@pytest.fixture(scope="session")
def nld_tiny(nld_tiny_dir: Path):
    from trimode.model import load

    return load(nld_tiny_dir)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def golden_ids(*keys: str) -> list[str]:
    """Case ids of the golden file, for parametrizing (collection fails loudly without fixtures)."""
    golden = json.loads((_require(NLD_TINY) / "golden.json").read_text())
    return [case["id"] for key in keys for case in golden[key]]


def tri_tiny(seed: int = 0, scale: float = 0.3, **changes):
    """A random tri-mode model (mask id 3, EOS 2) with a random drafting adapter. Weights are scaled
    up from the usual 0.02 so next-token distributions are peaked and greedy decisions are far from
    ties; property tests compare decoders that reach the same logits through different kernels."""
    from trimode.config import preset
    from trimode.model import DRAFT_ADAPTER, new_model

    cfg = preset("tiny").replace(vocab_size=96, tie_word_embeddings=False, mask_token_id=3, eos_token_ids=(2,))
    model = new_model(cfg.replace(**changes), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(scale / 0.02)
        for layer in model.model.layers:
            lora = layer.self_attn.o_proj.add_lora(DRAFT_ADAPTER, rank=4, scale=2.0)
            lora.A.copy_(torch.randn(lora.A.shape, generator=gen) * 0.3)
            lora.B.copy_(torch.randn(lora.B.shape, generator=gen) * 0.3)
    return model


TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def tiny_text_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A tri_tiny model (vocab 128) saved with a character-level tokenizer and a chat template, so
    text-level commands (bench suite, evaluations) run end to end on it in seconds."""
    import tokenizers
    from tokenizers import Regex, decoders, models, pre_tokenizers

    from trimode.model import save_pretrained

    chars = ["\n"] + [chr(c) for c in range(32, 127)]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<mask>": 3}
    vocab.update({c: i + 4 for i, c in enumerate(chars)})
    vocab.update({f"<u{i}>": i for i in range(len(vocab), 128)})
    backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(["<unk>", "<s>", "</s>", "<mask>"])
    tok_dir = folder / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    backend.save(str(tok_dir / "tokenizer.json"))
    (tok_dir / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "</s>", "chat_template": TINY_CHAT_TEMPLATE}))
    return save_pretrained(tri_tiny(seed=seed, vocab_size=128), folder / "model", tok_dir)
