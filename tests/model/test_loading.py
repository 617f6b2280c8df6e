"""Checkpoint loading/saving: NLD layout, HF folders (single and sharded), adapters, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from trimode.config import preset
from trimode.model import (
    DRAFT_ADAPTER,
    CheckpointError,
    load,
    new_model,
    save_pretrained,
)


def test_nld_fixture_keys_and_adapter(nld_tiny, nld_tiny_dir):
    raw = load_file(str(nld_tiny_dir / "model.safetensors"))
    assert "diffusion_head.weight" in raw and any(k.startswith("encoder.") for k in raw)
    assert torch.equal(nld_tiny.model.lm_head.weight, raw["diffusion_head.weight"])
    q = raw["encoder.layers.1.self_attn.q_proj.weight"]
    assert torch.equal(nld_tiny.model.model.layers[1].self_attn.qkv_proj.weight[: q.shape[0]], q)
    parts = nld_tiny.model.model.layers[0].self_attn.o_proj.adapters[DRAFT_ADAPTER]
    assert len(parts) == 1 and parts[0].scale == 4.0  # alpha 32 / r 8


def test_no_adapter_flag(nld_tiny_dir):
    assert load(nld_tiny_dir, adapter=False).model.adapter_names == []


def test_save_roundtrip_keeps_nld_layout(nld_tiny, nld_tiny_dir, tmp_path):
    out = save_pretrained(nld_tiny.model, tmp_path / "copy")
    saved = load_file(str(out / "model.safetensors"))
    original = load_file(str(nld_tiny_dir / "model.safetensors"))
    assert set(saved) == set(original)
    assert all(torch.equal(saved[k], original[k]) for k in original)
    again = load(out)
    ids = torch.tensor([[5, 17, 3, 40, 41]])
    for adapter in (None, DRAFT_ADAPTER):
        a = nld_tiny.model(ids, pattern="bidirectional", adapter=adapter)
        b = again.model(ids, pattern="bidirectional", adapter=adapter)
        assert torch.equal(a, b)
    assert json.loads((out / "config.json").read_text())["model_type"] == "nemotron_labs_diffusion"


def _hf_tiny(family: str):
    cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
           "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
           "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM)}[family]
    torch.manual_seed(0)
    cfg = cls[0](vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, tie_word_embeddings=family == "qwen2")
    return cls[1](cfg).eval()


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("shard", [None, "20KB"])
def test_hf_folders_written_by_transformers(tmp_path, family, shard):
    hf = _hf_tiny(family)
    kwargs = {"max_shard_size": shard} if shard else {}
    hf.save_pretrained(tmp_path, **kwargs)
    if shard:
        assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = load(tmp_path)
    assert ours.format == "hf"
    ids = torch.randint(0, 128, (1, 9))
    with torch.no_grad():
        assert (ours.model(ids) - hf(ids).logits).abs().max() < 1e-5


def test_our_save_loads_in_transformers(tmp_path):
    model = new_model(preset("tiny"), seed=5)
    save_pretrained(model, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.randint(0, 256, (1, 7))
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max() < 1e-5


def _copy_fixture(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("forward_logits.safetensors", "golden.json"))
    return dst


def test_missing_files(tmp_path, nld_tiny_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load(tmp_path / "empty")
    folder = _copy_fixture(nld_tiny_dir, tmp_path / "noweights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load(folder)


def test_unknown_architecture(tmp_path, nld_tiny_dir):
    folder = _copy_fixture(nld_tiny_dir, tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "gpt_neox"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown architecture model_type='gpt_neox'"):
        load(folder)


def test_shape_mismatch(tmp_path, nld_tiny_dir):
    folder = _copy_fixture(nld_tiny_dir, tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"shape mismatch for model.layers.0.mlp.(down_proj|\{gate,up\}_proj)"):
        load(folder)


def test_unexpected_and_missing_tensors(tmp_path, nld_tiny_dir):
    folder = _copy_fixture(nld_tiny_dir, tmp_path / "m")
    state = load_file(str(folder / "model.safetensors"))
    del state["encoder.norm.weight"]
    state["encoder.layers.0.mlp.router.weight"] = torch.zeros(2, 2)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing \['model.norm.weight'\].*unexpected"):
        load(folder)


def test_pickle_checkpoints_are_refused(tmp_path, nld_tiny_dir):
    folder = _copy_fixture(nld_tiny_dir, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not even read")
    with pytest.raises(CheckpointError, match="pickle"):
        load(folder)
    with pytest.raises(CheckpointError, match="pickle"):
        load(folder / "pytorch_model.bin")


def test_missing_shard(tmp_path):
    hf = _hf_tiny("llama")
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    next(tmp_path.glob("model-0000*-of-*.safetensors")).unlink()
    with pytest.raises(FileNotFoundError, match="listed in"):
        load(tmp_path)


def test_bad_adapter(tmp_path, nld_tiny_dir):
    folder = _copy_fixture(nld_tiny_dir, tmp_path / "m")
    adapter = folder / "linear_spec_lora" / "adapter_model.safetensors"
    state = load_file(str(adapter))
    key = next(k for k in state if "lora_A" in k)
    state[key] = torch.zeros(8, 65)
    save_file(state, str(adapter))
    with pytest.raises(CheckpointError, match="expected A\\[r, 64\\]"):
        load(folder)

