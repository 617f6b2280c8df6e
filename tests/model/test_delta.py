"""Tri-mode deltas: an adapter + embedding rows over a base, loaded as if they were one checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from trimode.config import preset
from trimode.decoding import DiffusionDecoder, GenerationConfig
from trimode.model import load, new_model
from trimode.model.adapters import DRAFT_ADAPTER
from trimode.model.convert import add_drafting_adapter, set_mask_token
from trimode.model.delta import DELTA_FILE, ROWS_FILE, DeltaError, save_delta
from trimode.model.loading import save_pretrained

MASK = 5


@pytest.fixture()
def base_and_delta(tmp_path):
    """A plain AR checkpoint (no mask token), and a delta that adds a mask row and an adapter."""
    cfg = preset("tiny").replace(vocab_size=64, eos_token_ids=(2,))
    base = save_pretrained(new_model(cfg, seed=1), tmp_path / "base")
    model = load(base, pack=False).model
    set_mask_token(model, MASK, block_size=4)
    add_drafting_adapter(model, rank=4, init="random", seed=3,
                         targets=("self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.up_proj"))
    model.config = model.config.replace(denoise_adapter=True)
    with torch.no_grad():
        model.model.embed_tokens.weight[MASK] = torch.linspace(-1, 1, cfg.hidden_size)
    delta = save_delta(model, tmp_path / "delta", base, [MASK], {"objective": "adapter", "steps": 0})
    return base, delta, model


def test_delta_loads_to_the_trained_model(base_and_delta):
    base, delta, trained = base_and_delta
    files = sorted(p.relative_to(delta).as_posix() for p in delta.rglob("*") if p.is_file())
    assert files == [ROWS_FILE, "linear_spec_lora/adapter_config.json",
                     "linear_spec_lora/adapter_model.safetensors", DELTA_FILE]
    loaded = load(delta, pack=False)
    assert loaded.format == "delta" and loaded.extras["base"] == base
    cfg = loaded.config
    assert (cfg.mask_token_id, cfg.block_size, cfg.denoise_adapter) == (MASK, 4, True)
    expected, got = trained.state_dict(), loaded.model.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    ids = torch.tensor([[1, 7, 9, MASK, MASK]])
    for adapter in (None, DRAFT_ADAPTER):
        with torch.inference_mode():
            torch.testing.assert_close(loaded.model(ids, adapter=adapter), trained(ids, adapter=adapter))


def test_delta_without_adapter_option_is_the_base_plus_mask_row(base_and_delta):
    _, delta, _ = base_and_delta
    loaded = load(delta, adapter=False, pack=False)
    assert loaded.model.adapter_names == [] and not loaded.config.denoise_adapter
    assert loaded.config.mask_token_id == MASK


def test_diffusion_denoises_with_the_adapter_only_when_the_config_says_so(base_and_delta):
    _, delta, _ = base_and_delta
    model = load(delta, pack=False).model
    dec = DiffusionDecoder(model)
    prompt = [[1, 7, 9, 11]]
    cfg = GenerationConfig(max_new_tokens=12, block_size=4, threshold=None)
    with_adapter = dec.generate(prompt, cfg).sequences
    without = dec.generate(prompt, GenerationConfig(max_new_tokens=12, block_size=4, threshold=None,
                                                    use_adapter=False)).sequences
    model.config = model.config.replace(denoise_adapter=False)
    base_only = dec.generate(prompt, cfg).sequences
    assert without == base_only
    assert with_adapter != without  # a random adapter changes what the denoiser proposes


def test_a_changed_base_is_refused(base_and_delta):
    base, delta, _ = base_and_delta
    path = base / "model.safetensors"
    state = load_file(str(path))
    key = next(iter(state))
    state[key] = state[key] + 1.0
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(DeltaError, match="sha256"):
        load(delta)
    meta = json.loads((delta / DELTA_FILE).read_text())
    meta["base"]["size"] += 1
    (delta / DELTA_FILE).write_text(json.dumps(meta))
    with pytest.raises(DeltaError, match="bytes"):
        load(delta)


def test_missing_base_and_bad_rows_are_named(base_and_delta, tmp_path):
    base, delta, _ = base_and_delta
    meta = json.loads((delta / DELTA_FILE).read_text())
    meta["base"] = {"path": str(tmp_path / "nowhere")}
    (delta / DELTA_FILE).write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load(delta)
    meta["base"] = {"path": str(base)}
    (delta / DELTA_FILE).write_text(json.dumps(meta))
    save_file({"ids": torch.tensor([MASK]), "rows": torch.zeros(1, 3)}, str(delta / ROWS_FILE))
    with pytest.raises(DeltaError, match="width"):
        load(delta)
    meta["version"] = 99
    (delta / DELTA_FILE).write_text(json.dumps(meta))
    with pytest.raises(DeltaError, match="version"):
        load(delta)


def test_the_delta_adapter_replaces_a_base_adapter(tmp_path):
    """Adapter training continues a base's own adapter; loading the delta must not stack the two."""
    cfg = preset("tiny").replace(vocab_size=64, eos_token_ids=(2,), mask_token_id=MASK)
    model = new_model(cfg, seed=1)
    add_drafting_adapter(model, rank=4, init="random", seed=3)
    base = save_pretrained(model, tmp_path / "base")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.adapters[DRAFT_ADAPTER][0].B.mul_(-2.0)
    delta = save_delta(model, tmp_path / "delta", base, [MASK])
    loaded = load(delta, pack=False).model
    parts = [len(layer.self_attn.o_proj.adapters[DRAFT_ADAPTER]) for layer in loaded.model.layers]
    assert parts == [1] * cfg.num_hidden_layers
    ids = torch.tensor([[1, 7, 9, MASK]])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(ids, adapter=DRAFT_ADAPTER), model(ids, adapter=DRAFT_ADAPTER))


def test_the_adapter_scope_and_partial_layers_survive_the_delta(tmp_path):
    cfg = preset("tiny").replace(vocab_size=64, eos_token_ids=(2,))
    base = save_pretrained(new_model(cfg, seed=1), tmp_path / "base")
    model = load(base, pack=False).model
    set_mask_token(model, MASK, block_size=4)
    top = range(cfg.num_hidden_layers - 1, cfg.num_hidden_layers)
    add_drafting_adapter(model, rank=4, init="random", seed=3, layers=top)
    model.config = model.config.replace(adapter_scope="masks")
    delta = save_delta(model, tmp_path / "delta", base, [MASK], {})
    acfg = json.loads((delta / "linear_spec_lora" / "adapter_config.json").read_text())
    assert acfg["layers_to_transform"] == list(top)
    again = load(delta, pack=False).model
    assert again.config.adapter_scope == "masks"
    with_adapter = [i for i, layer in enumerate(again.model.layers) if layer.self_attn.o_proj.adapters]
    assert with_adapter == list(top)
