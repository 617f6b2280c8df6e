"""GGUF metadata and tensors in Hugging Face terms: a ``config.json`` dict and a state dict under
``LlamaForCausalLM`` names (llama.cpp's q/k row order undone for the llama architecture)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ...files import require_finite
from .reader import GGUFError, GGUFFile, require


@dataclass(frozen=True)
class _Architecture:
    model_type: str
    hf_class: str
    # llama.cpp's converter reorders the rows of q/k projections for the llama architecture only.
    permuted_qk: bool


_ARCHITECTURES = {
    "llama": _Architecture("llama", "LlamaForCausalLM", permuted_qk=True),
    "qwen2": _Architecture("qwen2", "Qwen2ForCausalLM", permuted_qk=False),
    "qwen3": _Architecture("qwen3", "Qwen3ForCausalLM", permuted_qk=False),
}

_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_REQUIRED_LAYER_TENSORS = (
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)


def _architecture(gguf: GGUFFile) -> tuple[str, _Architecture]:
    name = require(gguf, "general.architecture")
    if name not in _ARCHITECTURES:
        raise GGUFError(
            f"{gguf.path}: GGUF architecture {name!r} is not supported "
            f"(supported: {', '.join(_ARCHITECTURES)})"
        )
    return name, _ARCHITECTURES[name]



def _int(gguf: GGUFFile, key: str, default: int | None = None) -> int:
    """An integer hyperparameter; without a default, a missing key is an error."""
    value = require(gguf, key) if default is None else gguf.metadata.get(key, default)
    if isinstance(value, np.ndarray):
        # Some architectures give per-layer counts; the HF classes here need one value for all.
        if value.size and (value == value.flat[0]).all():
            value = value.flat[0]
        else:
            raise GGUFError(f"{gguf.path}: per-layer values for {key!r} are not supported: {value}")
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise GGUFError(f"{gguf.path}: metadata {key!r} must be an integer, got {value!r}")
    return int(value)


def _float(gguf: GGUFFile, key: str, default: float | None = None) -> float:
    value = require(gguf, key) if default is None else gguf.metadata.get(key, default)
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        raise GGUFError(f"{gguf.path}: metadata {key!r} must be a number, got {value!r}")
    return float(value)


def hf_config_from_gguf(gguf: GGUFFile) -> dict[str, Any]:
    """A Hugging Face ``config.json``-style dict for the model in ``gguf``."""
    arch_name, arch = _architecture(gguf)
    meta = gguf.metadata

    def key(suffix: str) -> str:
        return f"{arch_name}.{suffix}"

    hidden = _int(gguf, key("embedding_length"))
    heads = _int(gguf, key("attention.head_count"))
    kv_heads = _int(gguf, key("attention.head_count_kv"), heads)
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads:
        raise GGUFError(
            f"{gguf.path}: inconsistent head counts: {heads} attention heads, {kv_heads} KV heads"
        )
    head_dim = _int(gguf, key("attention.key_length"), hidden // heads)
    rope_dims = meta.get(key("rope.dimension_count"), head_dim)
    if rope_dims != head_dim:
        raise GGUFError(
            f"{gguf.path}: partial rotary embeddings ({rope_dims} of {head_dim} head dims) "
            "are not supported"
        )
    vocab_size = meta.get(key("vocab_size"))
    if vocab_size is None:
        vocab_size = len(require(gguf, "tokenizer.ggml.tokens"))

    config: dict[str, Any] = {
        "model_type": arch.model_type,
        "architectures": [arch.hf_class],
        "vocab_size": int(vocab_size),
        "hidden_size": hidden,
        "intermediate_size": _int(gguf, key("feed_forward_length")),
        "num_hidden_layers": _int(gguf, key("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": _float(gguf, key("attention.layer_norm_rms_epsilon")),
        "rope_theta": _float(gguf, key("rope.freq_base"), 10000.0),
        "max_position_embeddings": _int(gguf, key("context_length")),
        "tie_word_embeddings": "output.weight" not in gguf.tensors,
    }
    if arch.model_type != "qwen2":  # Qwen2 always has q/k/v biases and no such option
        config["attention_bias"] = "blk.0.attn_q.bias" in gguf.tensors
    if arch.model_type == "llama":
        config["mlp_bias"] = False
    rope_scaling = _rope_scaling(gguf, arch_name)
    if rope_scaling is not None:
        config["rope_scaling"] = rope_scaling
    for name, gguf_key in (
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
        ("pad_token_id", "tokenizer.ggml.padding_token_id"),
    ):
        config[name] = _int(gguf, gguf_key) if gguf_key in meta else None
    return config


def _rope_scaling(gguf: GGUFFile, arch_name: str) -> dict[str, Any] | None:
    if "rope_freqs.weight" in gguf.tensors:
        raise GGUFError(
            f"{gguf.path}: per-frequency RoPE factors (tensor 'rope_freqs.weight', as written for "
            "Llama-3.1-style rope scaling) are not supported"
        )
    meta = gguf.metadata
    kind = meta.get(f"{arch_name}.rope.scaling.type")
    factor = meta.get(f"{arch_name}.rope.scaling.factor")
    if kind is None and factor is not None:
        kind = "linear"  # older files give only the factor
    if factor is not None:
        factor = _float(gguf, f"{arch_name}.rope.scaling.factor")
    if kind is None or kind == "none" or factor == 1.0:
        return None
    if kind not in ("linear", "yarn"):
        raise GGUFError(f"{gguf.path}: RoPE scaling type {kind!r} is not supported")
    if factor is None:
        raise GGUFError(
            f"{gguf.path}: RoPE scaling {kind!r} without {arch_name}.rope.scaling.factor"
        )
    scaling: dict[str, Any] = {"rope_type": kind, "factor": float(factor)}
    original = meta.get(f"{arch_name}.rope.scaling.original_context_length")
    if original is not None:
        scaling["original_max_position_embeddings"] = int(original)
    return scaling


def _hf_tensor_name(gguf: GGUFFile, name: str, num_layers: int) -> str:
    if name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[name]
    match = _LAYER_TENSOR_RE.fullmatch(name)
    if match and match[2] in _LAYER_TENSORS and int(match[1]) < num_layers:
        return f"model.layers.{int(match[1])}.{_LAYER_TENSORS[match[2]]}.{match[3]}"
    raise GGUFError(f"{gguf.path}: unexpected tensor {name!r} (no Hugging Face equivalent known)")


def _unpermute_rotary_rows(weight: np.ndarray, n_heads: int, what: str) -> np.ndarray:
    """Undo llama.cpp's q/k row order.

    Hugging Face's rotate-half RoPE pairs row i of a head with row i + head_dim/2; llama.cpp rotates
    adjacent rows (2i, 2i+1), so its converter interleaves the two halves of every head. Reading the
    head's rows as (pair, half) and swapping to (half, pair) restores the HF order.
    """
    rows = weight.shape[0]
    if rows % (2 * n_heads):
        raise GGUFError(f"{what} has {rows} rows, which do not split into {n_heads} heads")
    head_dim = rows // n_heads
    return (
        weight.reshape(n_heads, head_dim // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def state_dict_from_gguf(
    gguf: GGUFFile,
    config: dict[str, Any],
    dtype: torch.dtype = torch.float32,
    progress: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Every tensor of ``gguf`` dequantized, under Hugging Face ``*ForCausalLM`` names.

    ``progress=None`` shows a progress bar only on a terminal.
    """
    _, arch = _architecture(gguf)
    num_layers = config["num_hidden_layers"]
    names = {name: _hf_tensor_name(gguf, name, num_layers) for name in gguf.tensors}
    _check_complete(gguf, set(names.values()), num_layers)

    # Heads per projection whose rows llama.cpp reordered (k has the KV head count).
    rotary_heads = (
        {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
        if arch.permuted_qk
        else {}
    )
    state_dict: dict[str, torch.Tensor] = {}
    bar = tqdm(names.items(), desc="dequantizing GGUF", unit="tensor", disable=_no_bar(progress))
    for gguf_name, hf_name in bar:
        array = gguf.load(gguf_name)
        match = _LAYER_TENSOR_RE.fullmatch(gguf_name)
        if match and match[2] in rotary_heads:
            array = _unpermute_rotary_rows(
                array, rotary_heads[match[2]], f"{gguf.path}: tensor {gguf_name!r}"
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        require_finite(tensor, f"{gguf.path}: tensor {gguf_name!r}")
        state_dict[hf_name] = tensor.to(dtype)
    return state_dict


def _no_bar(progress: bool | None) -> bool | None:
    # tqdm's disable=None means "only on a TTY".
    return None if progress is None else not progress


def _check_complete(gguf: GGUFFile, hf_names: set[str], num_layers: int) -> None:
    expected = ["model.embed_tokens.weight", "model.norm.weight"] + [
        f"model.layers.{i}.{suffix}"
        for i in range(num_layers)
        for suffix in _REQUIRED_LAYER_TENSORS
    ]
    missing = [name for name in expected if name not in hf_names]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise GGUFError(f"{gguf.path}: the file lacks tensors for {shown}")
