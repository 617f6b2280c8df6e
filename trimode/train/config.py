"""What a training run needs to know, in one typed place (saved with every checkpoint)."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from ..config import ADAPTER_SCOPES
from .objective import ObjectiveConfig
from .schedule import SCHEDULES

# What a resumed run may change without --override. Every other key (any key added later too) is
# part of the run's identity: the model, what trains and how (objective, adapter shape, mask token),
# the data order (seed, seq_len, batch_size), the optimizer and its schedule (lr, min_lr_ratio,
# schedule, weight decay, betas, clip), the parameter dtype, and the held-out set the best adapter is
# chosen on (eval_data, eval_rows: its scores are compared across the whole run). Free are: how long
# the run goes (max_steps, and warmup, which the shipped recipe derives from the step count: a longer
# run re-plans the schedule of the steps not yet taken, as max_steps does); how often it saves,
# evaluates, snapshots and logs; where and how the same steps are computed (device, amp, FSDP,
# micro-batches, gradient checkpointing, attention kernel, the teacher-store cache); the data paths,
# whose content the data order checks by fingerprint on resume; and the output folder, which may move.
RESUMABLE_CHANGES = frozenset({
    "output", "data", "max_steps", "warmup", "save_every", "keep_checkpoints", "eval_every", "snapshot_every",
    "log_every", "progress", "device", "amp", "fsdp", "micro_batch", "gradient_checkpointing", "teacher_store_mb",
    "objective.attention",
})


@dataclass(frozen=True)
class TrainConfig:
    model: str | None  # checkpoint folder / .gguf; None = the default SmolLM2 model
    data: tuple[str, ...]
    output: str
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    max_steps: int = 1000
    seq_len: int = 512
    batch_size: int = 8  # global batch, in sequences, summed over ranks and accumulation steps
    micro_batch: int | None = None  # per-rank sequences per forward; None = batch_size // world
    lr: float = 1e-5
    min_lr_ratio: float = 0.1
    warmup: int = 0
    schedule: str = "wsd"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    clip: float = 1.0
    seed: int = 0
    save_every: int = 0  # 0 = only at the end
    keep_checkpoints: int = 2
    dtype: str = "float32"  # parameter dtype; "bfloat16" autocast is used on CUDA when amp is on
    amp: bool = True  # bf16 autocast on CUDA (float32 master weights)
    device: str = "cpu"
    gradient_checkpointing: bool = False
    fsdp: bool = False
    mask_token: str | None = None  # for a model without mask_token_id: token text or id
    train_mask_embedding: bool | None = None  # None: when the mask token was assigned here
    adapter_rank: int = 16
    adapter_alpha: float = 32.0
    adapter_targets: tuple[str, ...] = ("self_attn.o_proj",)
    adapter_top_layers: int = 0  # a new adapter goes on the top N layers only (0: every layer)
    adapter_scope: str = "block"  # a new adapter's scope: "block" (whole draft block) or "masks" (mask slots only)
    teacher_store_mb: float = 0.0  # adapter objective: keep the frozen passes per sequence (0: recompute each step)
    eval_data: tuple[str, ...] = ()  # held-out data for the adapter's draft metrics
    eval_every: int = 0  # steps between held-out evaluations (0: none); the best adapter goes to <output>/best
    eval_rows: int = 32  # held-out sequences evaluated
    snapshot_every: int = 0  # also keep the adapter as a delta in <output>/snapshots/step_N every N steps (at an eval)
    log_every: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if not self.data:
            raise ValueError("no training data given")
        if self.adapter_top_layers < 0:
            raise ValueError(f"adapter_top_layers must be >= 0, got {self.adapter_top_layers}")
        if self.adapter_scope not in ADAPTER_SCOPES:
            raise ValueError(f"adapter_scope must be one of {ADAPTER_SCOPES}, got {self.adapter_scope!r}")
        if self.eval_every and not self.eval_data:
            raise ValueError("eval_every needs eval_data (held-out sequences)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["objective"] = ObjectiveConfig(**d["objective"])
        d["data"] = tuple(d["data"])
        d["adapter_targets"] = tuple(d["adapter_targets"])
        d["eval_data"] = tuple(d.get("eval_data", ()))
        return cls(**d)


def _defaults() -> dict[str, Any]:
    """TrainConfig's defaults as a checkpoint saves them (the keys without a default aside)."""
    out: dict[str, Any] = {}
    for f in fields(TrainConfig):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
            out[f.name] = asdict(value) if f.name == "objective" else value
    return json.loads(json.dumps(out))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def config_changes(saved: dict[str, Any], current: TrainConfig) -> list[str]:
    """``key: old -> new`` for each identity key (not in RESUMABLE_CHANGES) that ``current`` changes
    from ``saved`` (a checkpoint's config; keys it predates count as their defaults)."""
    old = _flat(_defaults()) | _flat(saved)
    new = _flat(json.loads(json.dumps(current.to_dict())))  # tuples as lists, as saved
    return [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k]]
