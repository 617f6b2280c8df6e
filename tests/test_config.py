"""trimode.config: presets, the Hugging Face config.json round trip, validation."""

from __future__ import annotations

import pytest

from trimode.config import ModelConfig, RopeConfig, preset


def test_config_roundtrip_and_presets():
    for name in ("tiny", "nld-tiny", "smollm2-135m", "nld-8b"):
        cfg = preset(name)
        assert ModelConfig.from_hf(cfg.to_hf()) == cfg
    with pytest.raises(KeyError, match="unknown preset"):
        preset("gpt5")


@pytest.mark.parametrize("name, billions", [("nld-3b", 3.83), ("nld-8b", 8.49), ("nld-14b", 13.51)])
def test_released_size_presets_have_the_published_parameter_counts(name, billions):
    c = preset(name)
    per_layer = c.hidden_size * (2 * c.q_size + 2 * c.kv_size) + 3 * c.hidden_size * c.intermediate_size
    total = c.num_hidden_layers * per_layer + 2 * c.vocab_size * c.hidden_size
    assert total / 1e9 == pytest.approx(billions, abs=0.01)


# SmolLM2-135M-Instruct's config.json (transformers 4.x layout), as published.
SMOLLM2_HF = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
    "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    "rms_norm_eps": 1e-05, "max_position_embeddings": 8192, "rope_theta": 100000, "rope_scaling": None,
    "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
}


def test_a_published_llama_config_reads_as_the_preset():
    cfg = ModelConfig.from_hf(SMOLLM2_HF)
    assert cfg == preset("smollm2-135m")
    assert cfg.head_dim == 64  # 576 / 9: head_dim is derived when config.json omits it
    assert (cfg.q_size, cfg.kv_size) == (576, 192)
    assert cfg.eos_token_ids == (2,) and cfg.rope == RopeConfig(theta=100000.0)


def test_family_defaults_and_eos_lists():
    base = {k: SMOLLM2_HF[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                       "num_attention_heads")}
    qwen2 = ModelConfig.from_hf({**base, "model_type": "qwen2", "eos_token_id": [2, 7]})
    assert qwen2.attention_bias and qwen2.tie_word_embeddings and not qwen2.qk_norm
    assert qwen2.rms_norm_eps == 1e-6 and qwen2.eos_token_ids == (2, 7)
    assert qwen2.num_key_value_heads == 9  # no num_key_value_heads: plain multi-head attention
    qwen3 = ModelConfig.from_hf({**base, "model_type": "qwen3"})
    assert qwen3.qk_norm and not qwen3.attention_bias and qwen3.eos_token_ids == ()
    assert qwen3.to_hf()["eos_token_id"] == []
    windowed = ModelConfig.from_hf({**base, "model_type": "mistral", "sliding_window": 64})
    assert windowed.sliding_window == 64
    off = ModelConfig.from_hf({**base, "model_type": "qwen2", "sliding_window": 64, "use_sliding_window": False})
    assert off.sliding_window is None


def test_rope_fields_from_both_transformers_layouts():
    base = {k: SMOLLM2_HF[k] for k in ("model_type", "vocab_size", "hidden_size", "intermediate_size",
                                       "num_hidden_layers", "num_attention_heads")}
    v4 = ModelConfig.from_hf({**base, "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 4.0}})
    v5 = ModelConfig.from_hf({**base, "rope_parameters": {"rope_type": "linear", "rope_theta": 5e5, "factor": 4.0}})
    assert v4.rope == v5.rope == RopeConfig(type="linear", theta=5e5, factor=4.0)
    # yarn without a factor: max_position_embeddings / original_max_position_embeddings
    yarn = ModelConfig.from_hf({**base, "max_position_embeddings": 32768,
                                "rope_parameters": {"rope_type": "yarn", "original_max_position_embeddings": 4096}})
    assert yarn.rope.factor == 8.0 and yarn.rope.original_max_position_embeddings == 4096
    with pytest.raises(ValueError, match="needs a 'factor'"):
        ModelConfig.from_hf({**base, "rope_scaling": {"type": "linear"}})


def test_tri_mode_fields_round_trip_and_are_left_out_when_unset():
    tiny = preset("tiny")
    hf = tiny.to_hf()
    assert not {"mask_token_id", "block_size", "trimode_denoise_adapter", "trimode_adapter_scope"} & set(hf)
    tri = tiny.replace(mask_token_id=3, block_size=8, denoise_adapter=True, adapter_scope="masks")
    hf = tri.to_hf()
    assert (hf["mask_token_id"], hf["block_size"], hf["trimode_denoise_adapter"], hf["trimode_adapter_scope"]) == (
        3, 8, True, "masks")
    assert ModelConfig.from_hf(hf) == tri


def test_invalid_configs_are_refused():
    tiny = preset("tiny")
    with pytest.raises(ValueError, match="not a multiple of num_key_value_heads=3"):
        tiny.replace(num_key_value_heads=3)
    with pytest.raises(ValueError, match="head_dim must be positive, got 0"):
        tiny.replace(head_dim=0)
    with pytest.raises(ValueError, match="adapter_scope must be one of"):
        tiny.replace(adapter_scope="everywhere")
    with pytest.raises(ValueError, match="unknown architecture model_type='gpt2'"):
        ModelConfig.from_hf({**tiny.to_hf(), "model_type": "gpt2"})
    with pytest.raises(ValueError, match=r"lacks required fields \['hidden_size'\]"):
        ModelConfig.from_hf({k: v for k, v in tiny.to_hf().items() if k != "hidden_size"})


@pytest.mark.parametrize("fields, message", [
    ({"hidden_size": "64"}, "hidden_size must be an integer, got '64'"),
    ({"num_hidden_layers": True}, "num_hidden_layers must be an integer, got True"),
    ({"num_hidden_layers": 200000}, "num_hidden_layers=200000 is above the limit"),
    ({"head_dim": 15}, "head_dim must be even"),
    ({"rms_norm_eps": 0.0}, "rms_norm_eps must be positive"),
    ({"mask_token_id": 256}, "mask_token_id=256 is above the vocabulary's last id 255"),
    ({"block_size": 2048}, "block_size=2048 is above max_position_embeddings 1024"),
    ({"eos_token_ids": ("2",)}, "eos_token_id must be an integer"),
])
def test_config_values_are_checked_for_type_and_range(fields, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny").replace(**fields)

