"""Typed model configuration, conversion from/to Hugging Face ``config.json``, and named presets.

One dataclass covers the Llama / Mistral / Ministral-3 / Qwen2 / Qwen3 family and the
Nemotron-Labs-Diffusion (NLD) checkpoints built on Ministral-3: the families differ only in a few
switches (q/k-norm, q/k/v bias, tied head, RoPE variant, sliding window).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

# model_type values we can build, and what each one implies.
SUPPORTED_MODEL_TYPES = (
    "llama",
    "mistral",
    "ministral",
    "ministral3",
    "qwen2",
    "qwen3",
    "nemotron_labs_diffusion",
)
NLD_MODEL_TYPE = "nemotron_labs_diffusion"


ADAPTER_SCOPES = ("block", "masks")
# Far above every released model (the largest have ~130 layers, hidden sizes near 16k and
# vocabularies near 256k), and low enough that no config can make a model, or anything sized from
# its config, take absurd time or memory; positions stop being exact in RoPE past 2**24.
SIZE_LIMITS = {
    "vocab_size": 2**22,
    "hidden_size": 2**16,
    "intermediate_size": 2**20,
    "num_hidden_layers": 1024,
    "num_attention_heads": 1024,
    "num_key_value_heads": 1024,
    "head_dim": 4096,
    "max_position_embeddings": 2**24,
}


def check_int(name: str, value: Any, low: int = 1, high: int | None = None, what: str = "the limit of") -> None:
    """ValueError unless ``value`` is an integer (not a bool, float or string) in [low, high].
    A value of the wrong JSON type is a bad value: ValueError is what commands report as one line."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")  # noqa: TRY004
    if value < low:
        raise ValueError(f"{name} must be {'positive' if low == 1 else f'>= {low}'}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name}={value} is above {what} {high}")


def _number(name: str, value: Any, positive: bool = False) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return float(value)


@dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding variant. ``type`` is one of ``default``, ``linear``, ``llama3``, ``yarn``."""

    type: str = "default"
    theta: float = 10000.0
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    # llama3
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    # yarn
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True
    # Ministral-3 / Llama-4 query scale: q *= 1 + beta * ln(1 + floor(pos / original_max)).
    llama4_scaling_beta: float | None = None

    def __post_init__(self) -> None:
        if self.type not in ("default", "linear", "llama3", "yarn"):
            raise ValueError(
                f"unsupported RoPE type {self.type!r}; expected one of default, linear, llama3, yarn"
            )


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 4096
    rope: RopeConfig = field(default_factory=RopeConfig)
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Qwen2: biases on q/k/v
    qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on q and k before RoPE
    sliding_window: int | None = None
    model_type: str = "llama"
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    # Tri-mode fields (NLD checkpoints); None for plain AR checkpoints.
    mask_token_id: int | None = None
    block_size: int | None = None
    # Adapter conversions (frozen AR base): diffusion also denoises with the drafting adapter,
    # since the base itself never learned to fill masks.
    denoise_adapter: bool = False
    # Where the drafting adapter applies inside a draft or denoising block. "block": every token of
    # the block (the published adapter). "masks": mask slots only; the known slots (a draft's seed, a
    # quadratic grid's heads) stay exact causal, adapter-off queries, which is what lets quadratic
    # self-speculation, whose heads verify, draft with the adapter in the same forward.
    adapter_scope: str = "block"

    def __post_init__(self) -> None:
        if self.adapter_scope not in ADAPTER_SCOPES:
            raise ValueError(f"adapter_scope must be one of {ADAPTER_SCOPES}, got {self.adapter_scope!r}")
        for name, high in SIZE_LIMITS.items():
            check_int(name, getattr(self, name), 1, high, "the limit (far beyond any released model) of")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (RoPE rotates pairs of dimensions), got {self.head_dim}")
        _number("rms_norm_eps", self.rms_norm_eps, positive=True)
        for name in ("bos_token_id", "pad_token_id"):  # some configs write -1 for "none"
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), -(2**31))
        for token in self.eos_token_ids:
            check_int("eos_token_id", token, -(2**31))
        if self.mask_token_id is not None:
            check_int("mask_token_id", self.mask_token_id, 0, self.vocab_size - 1, "the vocabulary's last id")
        if self.block_size is not None:
            check_int("block_size", self.block_size, 1, self.max_position_embeddings, "max_position_embeddings")
        if self.sliding_window is not None:
            check_int("sliding_window", self.sliding_window, 1)

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ HF conversion
    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "ModelConfig":
        """Build from a Hugging Face ``config.json`` dict (transformers 4.x or 5.x layout)."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unknown architecture model_type={model_type!r} "
                f"(architectures={hf.get('architectures')}); supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        missing = [
            k
            for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
            if k not in hf
        ]
        if missing:
            raise ValueError(f"config.json lacks required fields {missing} for model_type={model_type!r}")
        heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or _head_dim(hf["hidden_size"], heads)
        eos = hf.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
        is_qwen = model_type in ("qwen2", "qwen3")
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=hf.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6 if is_qwen else 1e-5),
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            rope=_rope_from_hf(hf),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", model_type == "qwen2")),
            attention_bias=bool(hf.get("attention_bias", model_type == "qwen2")),
            qk_norm=model_type == "qwen3",
            sliding_window=hf.get("sliding_window") if hf.get("use_sliding_window", True) else None,
            model_type=model_type,
            bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=eos_ids,
            pad_token_id=hf.get("pad_token_id"),
            mask_token_id=hf.get("mask_token_id"),
            block_size=hf.get("block_size"),
            denoise_adapter=bool(hf.get("trimode_denoise_adapter", False)),
            adapter_scope=hf.get("trimode_adapter_scope", "block"),
        )

    def to_hf(self) -> dict[str, Any]:
        """A ``config.json`` dict that transformers (and :meth:`from_hf`) reads back to this config."""
        out: dict[str, Any] = {
            "model_type": self.model_type,
            "architectures": [_HF_ARCHITECTURES.get(self.model_type, "LlamaForCausalLM")],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "hidden_act": "silu",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_ids) if len(self.eos_token_ids) != 1 else self.eos_token_ids[0],
            "pad_token_id": self.pad_token_id,
            "sliding_window": self.sliding_window,
            "rope_parameters": _rope_to_hf(self.rope),
        }
        if self.mask_token_id is not None:
            out["mask_token_id"] = self.mask_token_id
        if self.block_size is not None:
            out["block_size"] = self.block_size
        if self.denoise_adapter:
            out["trimode_denoise_adapter"] = True
        if self.adapter_scope != "block":
            out["trimode_adapter_scope"] = self.adapter_scope
        if self.model_type == NLD_MODEL_TYPE:
            # What the released checkpoints' remote code reads besides the Ministral-3 fields.
            out.update(
                dlm_paradigm="bidirectional",
                auto_map={
                    "AutoConfig": "configuration_nemotron_labs_diffusion.NemotronLabsDiffusionConfig",
                    "AutoModel": "modeling_nemotron_labs_diffusion.NemotronLabsDiffusionModel",
                },
                ar_loss_weight=1.0,
                dlm_loss_weight=None,
                dp_varying_mask_ratio=False,
                mlp_bias=False,
                attention_dropout=0.0,
                use_cache=False,
            )
        return out


_HF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "ministral": "MinistralForCausalLM",
    "ministral3": "Ministral3ForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    NLD_MODEL_TYPE: "NemotronLabsDiffusionModel",
}


def _head_dim(hidden: Any, heads: Any) -> int:
    check_int("hidden_size", hidden)
    check_int("num_attention_heads", heads)
    if hidden % heads:
        raise ValueError(f"hidden_size={hidden} is not divisible by num_attention_heads={heads} (and there is no head_dim)")
    return hidden // heads


def _rope_from_hf(hf: dict[str, Any]) -> RopeConfig:
    # transformers 5 puts everything in rope_parameters; 4.x uses rope_theta + rope_scaling.
    for key in ("rope_parameters", "rope_scaling"):
        if not isinstance(hf.get(key) or {}, dict):
            raise ValueError(f"{key} must be an object, got {hf[key]!r}")  # noqa: TRY004 (see check_int)
    params = dict(hf.get("rope_parameters") or {})
    scaling = hf.get("rope_scaling") or {}
    for k, v in scaling.items():
        params.setdefault(k, v)
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type == "linear" and "factor" not in params:
        raise ValueError("rope_scaling of type 'linear' needs a 'factor'")
    original = params.get("original_max_position_embeddings")
    if rope_type == "yarn" and original is None:
        original = hf.get("max_position_embeddings")
    if original is not None:
        check_int("original_max_position_embeddings", original, 1, SIZE_LIMITS["max_position_embeddings"])
    factor = params.get("factor")
    if factor is None:
        factor = hf.get("max_position_embeddings", 4096) / original if (rope_type == "yarn" and original) else 1.0

    def optional(key: str) -> float | None:
        return None if params.get(key) is None else _number(key, params[key])

    return RopeConfig(
        type=rope_type,
        theta=_number("rope_theta", theta, positive=True),
        factor=_number("rope factor", factor, positive=True),
        original_max_position_embeddings=original,
        low_freq_factor=_number("low_freq_factor", params.get("low_freq_factor", 1.0)),
        high_freq_factor=_number("high_freq_factor", params.get("high_freq_factor", 4.0)),
        beta_fast=_number("beta_fast", params.get("beta_fast") or 32.0),
        beta_slow=_number("beta_slow", params.get("beta_slow") or 1.0),
        mscale=optional("mscale"),
        mscale_all_dim=optional("mscale_all_dim"),
        attention_factor=optional("attention_factor"),
        truncate=bool(params.get("truncate", True)),
        llama4_scaling_beta=optional("llama_4_scaling_beta"),
    )


def _rope_to_hf(rope: RopeConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"rope_type": rope.type, "rope_theta": rope.theta}
    if rope.type != "default":
        out["factor"] = rope.factor
    if rope.original_max_position_embeddings is not None:
        out["original_max_position_embeddings"] = rope.original_max_position_embeddings
    if rope.type == "llama3":
        out.update(low_freq_factor=rope.low_freq_factor, high_freq_factor=rope.high_freq_factor)
    if rope.type == "yarn":
        out.update(beta_fast=rope.beta_fast, beta_slow=rope.beta_slow, truncate=rope.truncate)
        for k in ("mscale", "mscale_all_dim", "attention_factor"):
            if getattr(rope, k) is not None:
                out[k] = getattr(rope, k)
    if rope.llama4_scaling_beta is not None:
        out["llama_4_scaling_beta"] = rope.llama4_scaling_beta
    return out


# ---------------------------------------------------------------------- presets

def _nld_rope() -> RopeConfig:
    return RopeConfig(
        type="yarn",
        theta=1e6,
        factor=16.0,
        original_max_position_embeddings=16384,
        beta_fast=32.0,
        beta_slow=1.0,
        mscale=1.0,
        mscale_all_dim=1.0,
        llama4_scaling_beta=0.1,
    )


def _nld(hidden: int, layers: int, intermediate: int) -> ModelConfig:
    return ModelConfig(
        vocab_size=131072,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        rms_norm_eps=1e-5,
        max_position_embeddings=262144,
        rope=_nld_rope(),
        tie_word_embeddings=False,
        model_type=NLD_MODEL_TYPE,
        bos_token_id=1,
        eos_token_ids=(11,),
        mask_token_id=100,
        block_size=32,
    )


PRESETS: dict[str, ModelConfig] = {
    # Small enough for unit tests; GQA and a tied head so those paths are always exercised.
    "tiny": ModelConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        rope=RopeConfig(theta=10000.0),
        tie_word_embeddings=True,
        eos_token_ids=(2,),
        bos_token_id=1,
    ),
    # The layout of ../shared/fixtures/nld-tiny: NLD rope and special ids at toy size.
    "nld-tiny": _nld(64, 2, 128).replace(
        vocab_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=16
    ),
    "smollm2-135m": ModelConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        rms_norm_eps=1e-5,
        max_position_embeddings=8192,
        rope=RopeConfig(theta=100000.0),
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_ids=(2,),
        pad_token_id=2,
    ),
    # Released Nemotron-Labs-Diffusion sizes (Ministral-3 based); intermediate sizes are Ministral-3's.
    "nld-3b": _nld(3072, 26, 9216),
    "nld-8b": _nld(4096, 34, 14336),
    "nld-14b": _nld(5120, 40, 16384),
}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}") from None
