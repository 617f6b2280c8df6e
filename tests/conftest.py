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
