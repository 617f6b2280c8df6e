"""Learning-rate schedules as pure functions of the step (so a resumed run needs only the step)."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "wsd", "constant")


def lr_at(step: int, *, base_lr: float, max_steps: int, warmup: int, schedule: str, min_lr_ratio: float = 0.1,
          decay_fraction: float = 0.2) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Linear warmup over ``warmup`` steps, then ``cosine`` decay to ``min_lr_ratio``·base_lr at
    ``max_steps``; or ``wsd`` (warmup-stable-decay: constant, then a linear decay over the last
    ``decay_fraction`` of the run, the publisher's recipe); or ``constant``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    floor = base_lr * min_lr_ratio
    if schedule == "constant" or max_steps <= warmup:
        return base_lr
    if schedule == "cosine":
        frac = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        return floor + (base_lr - floor) * 0.5 * (1 + math.cos(math.pi * frac))
    decay_start = max(warmup, int(max_steps * (1 - decay_fraction)))
    if step < decay_start:
        return base_lr
    frac = min(1.0, (step - decay_start) / max(1, max_steps - decay_start))
    return base_lr + (floor - base_lr) * frac
