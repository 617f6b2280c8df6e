"""What a training run needs to know, in one typed place (saved with every checkpoint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import ADAPTER_SCOPES
from .objective import ObjectiveConfig
from .schedule import SCHEDULES


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
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        d["objective"] = ObjectiveConfig(**d["objective"])
        d["data"] = tuple(d["data"])
        d["adapter_targets"] = tuple(d["adapter_targets"])
        d["eval_data"] = tuple(d.get("eval_data", ()))
        return cls(**d)
