"""``trimode export``: the Nemotron-Labs-Diffusion layout, loaded back with identical outputs in
every mode; refusals for what the layout cannot express."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from tests.conftest import tri_tiny
from trimode.decoding import MODES, decoder_for
from trimode.decoding.base import GenerationConfig
from trimode.model import load
from trimode.train.export import ExportError, export_nld


def _outputs(model, prompts):
    cfg = GenerationConfig(max_new_tokens=24, block_size=4, eos_token_ids=(2,))
    return {mode: decoder_for(mode, model).generate(prompts, cfg).sequences for mode in MODES}


@pytest.mark.parametrize("tied", [True, False])
def test_round_trip_gives_identical_greedy_outputs_in_all_modes(tmp_path, tied):
    model = tri_tiny(tie_word_embeddings=tied)
    folder = export_nld(model, tmp_path / "nld")
    loaded = load(folder, pack=False)
    assert loaded.format == "nld" and loaded.model.adapter_names == ["linear_spec"]
    prompts = [[5, 9, 14, 20], [7, 8]]
    assert _outputs(loaded.model, prompts) == _outputs(model, prompts)
    x = torch.tensor([[5, 9, 14, 20, 3, 3]])
    for adapter in (None, "linear_spec"):
        assert torch.equal(loaded.model(x, adapter=adapter), model(x, adapter=adapter))


def test_layout_matches_the_released_checkpoints(tmp_path, nld_tiny_dir):
    folder = export_nld(tri_tiny(), tmp_path / "nld")
    ours = json.loads((folder / "config.json").read_text())
    released = json.loads((nld_tiny_dir / "config.json").read_text())
    assert ours["model_type"] == released["model_type"] == "nemotron_labs_diffusion"
    assert ours["architectures"] == released["architectures"] and ours["auto_map"] == released["auto_map"]
    wanted = {"mask_token_id", "block_size", "dlm_paradigm", "rope_parameters", "head_dim", "num_key_value_heads",
              "tie_word_embeddings", "ar_loss_weight", "dlm_loss_weight"}
    assert wanted <= set(ours) and not ours["tie_word_embeddings"]
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    with safe_open(str(nld_tiny_dir / "model.safetensors"), "pt") as f:
        released_names = set(f.keys())
    assert names == released_names  # same tensor names for the same architecture (2 layers)
    adapter = json.loads((folder / "linear_spec_lora" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["target_modules"] == ["o_proj"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"qk_norm": True}, "q/k RMSNorm"),
        ({"attention_bias": True}, "biases"),
        ({"sliding_window": 16}, "sliding-window"),
        ({"mask_token_id": None}, "mask_token_id"),
    ],
)
def test_unexpressible_models_are_refused(tmp_path, change, message):
    model = tri_tiny(**change)
    with pytest.raises(ExportError, match=message):
        export_nld(model, tmp_path / "nld")
    assert not (tmp_path / "nld").exists()


@pytest.mark.slow
def test_smollm2_export_round_trip(tmp_path):
    """The real model: GGUF + a mask token -> NLD folder (tokenizer and chat template included)."""
    from trimode.cli import main
    from trimode.model.convert import resolve_token, set_mask_token
    from trimode.model.defaults import smollm2_gguf_path

    assert main(["export", "--output", str(tmp_path / "nld"), "--mask-token", "<empty_output>"]) == 0
    exported = load(tmp_path / "nld")
    original = load(smollm2_gguf_path())
    set_mask_token(original.model, resolve_token(original.tokenizer, "<empty_output>"))
    prompt = [original.tokenizer.encode_chat([{"role": "user", "content": "Name three colours."}])]
    assert exported.tokenizer.encode_chat([{"role": "user", "content": "Name three colours."}]) == prompt[0]
    cfg = GenerationConfig(max_new_tokens=32, block_size=8, eos_token_ids=original.eos_token_ids)
    for mode in ("ar", "linear-spec"):
        a = decoder_for(mode, original.model).generate(prompt, cfg).sequences
        b = decoder_for(mode, exported.model).generate(prompt, cfg).sequences
        assert a == b, mode
