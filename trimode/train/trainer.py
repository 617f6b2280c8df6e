"""The training loop: AdamW, schedule, clipping, accumulation, data parallelism, exact resume.

Gradients are taken of loss *sums*; after the last micro-batch they are scaled by
world / (global token count), so the update is that of the global token average over every
micro-batch of every rank (DDP and FSDP average over ranks, hence the factor world). The loss
reported is the same global average, identical on every rank.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions
from tqdm import tqdm

from ..model.transformer import Transformer
from .checkpoint import (
    CheckpointError,
    newest_checkpoint,
    pointer_problem,
    remove_stale_temporaries,
    save_checkpoint,
)
from .config import TrainConfig, config_changes
from .distributed import DistEnv
from .draft_objective import Teacher, TeacherStore, teacher_for
from .objective import LossTerms, adapter_terms, ar_terms, corrupt, draft_phase, draft_revealed, joint_terms
from .schedule import lr_at

# Checkpoints hold whole (unsharded) tensors on the CPU, whatever the parallelism that wrote them.
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)


class ObjectiveModule(nn.Module):
    """The model plus its objective behind one ``forward``, so DDP/FSDP hooks see every forward."""

    def __init__(self, model: Transformer, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg.objective
        self.seed = cfg.seed
        self.teachers = None
        if cfg.teacher_store_mb > 0 and cfg.objective.kind == "adapter":
            if cfg.objective.distill_topk < 1:
                raise ValueError("a teacher store keeps the verifier's top-k: set distill_topk (--distill-topk) > 0")
            if cfg.objective.draft_phase != "fixed":
                raise ValueError("a teacher store keeps the draft's lower-layer pass of one block phase: use "
                                 "--draft-phase fixed with --teacher-store-mb, or no store with --draft-phase random")
            if cfg.objective.draft_reveal > 0:
                raise ValueError("a teacher store keeps the draft's lower-layer pass of fully masked blocks: use "
                                 "--draft-reveal 0 with --teacher-store-mb, or no store with --draft-reveal")
            self.teachers = TeacherStore(cfg.teacher_store_mb)

    def forward(self, x0: torch.Tensor, loss_mask: torch.Tensor, step: int, first_row: int,
                index: torch.Tensor | None = None) -> LossTerms:
        kind = self.cfg.kind
        if kind == "ar":
            return ar_terms(self.model, x0, loss_mask, self.cfg)
        if kind == "adapter":
            teacher = self._teacher(x0, loss_mask, index) if self.teachers is not None and index is not None else None
            phase = draft_phase(self.cfg, self.seed, step, first_row)
            revealed = draft_revealed(self.cfg, self.seed, step, first_row, tuple(x0.shape), phase, x0.device)
            return adapter_terms(self.model, x0, loss_mask, self.cfg, teacher, phase, revealed)
        corruption = corrupt(loss_mask, self.cfg, self.seed, step, first_row)
        return joint_terms(self.model, x0, loss_mask, corruption, self.cfg)

    def _teacher(self, x0: torch.Tensor, loss_mask: torch.Tensor, index: torch.Tensor) -> Teacher:
        """The rows' teachers, from the store where kept, computed (and offered to it) otherwise."""
        keys = [int(i) for i in index]
        found = [self.teachers.get(k) for k in keys]
        missing = [r for r, t in enumerate(found) if t is None]
        if missing:
            fresh = teacher_for(self.model, x0[missing], loss_mask[missing], self.cfg.draft_settings())
            for j, r in enumerate(missing):
                found[r] = fresh.rows([j])
                self.teachers.put(keys[r], found[r])
        dtype = self.model.model.embed_tokens.weight.dtype
        return Teacher.cat([t.to(dtype=dtype, device=x0.device) for t in found])


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (and LoRA factors); never norms, biases, or a partially trained embedding."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        partial = getattr(p, "_trimode_row_mask", None) is not None
        (no_decay if p.dim() < 2 or partial else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class Trainer:
    def __init__(self, cfg: TrainConfig, model: Transformer, batches, env: DistEnv, tokenizer=None) -> None:
        self.cfg, self.env, self.batches, self.tokenizer = cfg, env, batches, tokenizer
        self.output = Path(cfg.output)
        self.model = model
        model.gradient_checkpointing = cfg.gradient_checkpointing
        model.train()
        self.trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not self.trainable:
            raise ValueError("nothing to train: every parameter is frozen")
        self.module = ObjectiveModule(model, cfg)
        if cfg.fsdp and env.world > 1 and any(hasattr(p, "_trimode_row_mask") for p in self.trainable.values()):
            raise ValueError("--fsdp cannot train single embedding rows (the mask token's); train the adapter "
                             "without --fsdp (data parallel), or give the checkpoint a trained mask token first")
        self.wrapped = self._wrap(self.module)
        # FSDP replaces parameters by sharded ones: look them up again after wrapping.
        self.trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(
            _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8
        )
        self.step = 0
        self.train_seconds = 0.0  # summed step times over every stretch of the run (resumes included)
        self.metrics_path = self.output / "metrics.jsonl"
        self.eval_path = self.output / "eval.jsonl"
        # While this file exists the run waits between steps, keeping its in-memory state (the frozen
        # passes stored so far) and leaving the wait out of train_s: other work can have the CPU
        # without a restart, and the curve's training minutes stay honest.
        self.pause_path = self.output / "PAUSE"

    # ----------------------------------------------------------------- set-up
    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.env.world == 1:
            return module
        if self.cfg.fsdp:
            from torch.distributed.fsdp import fully_shard

            for layer in module.model.model.layers:
                fully_shard(layer)
            return fully_shard(module)
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=None if self.env.device == "cpu" else [self.env.local_rank])

    def trainable_state(self) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        full = get_model_state_dict(self.module, options=_GATHER)
        names = {f"model.{n}" for n in self.trainable}
        return {k: v for k, v in full.items() if k in names}

    def save(self) -> Path | None:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        model_state = self.trainable_state()
        optim_state = get_optimizer_state_dict(self.module, self.optimizer, options=_GATHER)
        path = None
        if self.env.main:
            meta = {"config": self.cfg.to_dict(), "data": self.batches.state_dict(), "world": self.env.world}
            path = save_checkpoint(self.output, self.step, model_state, optim_state, meta, self.cfg.keep_checkpoints)
        self.env.barrier()
        return path

    def _say(self, message: str) -> None:
        if self.env.main:
            print(f"trimode: {message}", file=sys.stderr, flush=True)

    def resume(self, override: bool = False) -> None:
        """Continue from the newest checkpoint that verifies; :class:`CheckpointError` when there is
        none, or when this run's configuration changes an identity key of the checkpoint's (unless
        ``override``)."""
        from torch.distributed.checkpoint.state_dict import (
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        root = self.output / "checkpoints"
        found, rejected = newest_checkpoint(self.output)
        if found is None and rejected:
            raise CheckpointError(f"cannot resume: no usable checkpoint in {root} ("
                                  + "; ".join(f"{p.name}: {why}" for p, why in rejected) + ")")
        if found is None:
            raise CheckpointError(f"--resume: no checkpoint in {root} to resume from "
                                  "(run without --resume to start at step 0)")
        saved = found.meta["config"] if isinstance(found.meta["config"], dict) else {}
        changes = config_changes(saved, self.cfg)
        if changes and not override:
            raise CheckpointError(f"cannot resume from {found.path}: the configuration changed ({'; '.join(changes)}); "
                                  "pass --override to resume with the new values, or use another --output")
        for path, why in rejected:
            self._say(f"warning: checkpoint {path.name} is unusable: {why}; falling back to {found.path.name}")
        problem = pointer_problem(self.output)
        if problem:
            self._say(f"note: {root / 'latest.json'} is {problem}; resuming from the newest step folder")
        if not found.verified:
            self._say(f"note: checkpoint {found.path.name} has no checksums (written before they were recorded): "
                      "its files are not verified")
        if changes:
            self._say(f"note: resuming with a changed configuration (--override): {'; '.join(changes)}")
        try:
            # Only the trainable tensors are saved, so the model state is loaded non-strictly.
            set_model_state_dict(self.module, found.model, options=StateDictOptions(full_state_dict=True, strict=False))
            set_optimizer_state_dict(self.module, self.optimizer, found.optimizer,
                                     options=StateDictOptions(full_state_dict=True))
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"cannot resume from {found.path}: its weights or optimizer state do not fit "
                                  f"this run's trainable parameters ({err})") from None
        if self.batches.load_state_dict(found.meta["data"], new_data=override):
            self._say(f"note: the data changed since {found.path.name} (--override): training goes on from step "
                      f"{found.step} with a new epoch over {len(self.batches.dataset)} sequences")
        found.restore_rng()
        self.step = found.step
        if self.env.main:
            for path in (self.metrics_path, self.eval_path):
                kept, dropped = self._truncate(path, self.step)
                if path == self.metrics_path:
                    self.train_seconds = sum(r.get("step_s", 0.0) for r in kept)
                if dropped:
                    self._say(f"note: dropped {dropped} unreadable line{'s' * (dropped > 1)} of {path} "
                              "(a write the killed run did not finish)")
        self.env.barrier()

    @staticmethod
    def _truncate(path: Path, step: int) -> tuple[list[dict[str, Any]], int]:
        """One line per step up to ``step``: a killed run logged lines after its last checkpoint that
        the resumed run writes again, and its last line can be partial. The last line of a step
        wins (the run that wrote the checkpoint wrote it last). Returns the records and the number
        of unreadable lines dropped."""
        records, dropped = read_records(path)
        by_step = {r["step"]: r for r in records if r["step"] <= step}
        kept = [by_step[s] for s in sorted(by_step)]
        if path.is_file():
            tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, path)
        return kept, dropped

    # ----------------------------------------------------------------- loop
    def _micro_batches(self, batch: dict[str, torch.Tensor]) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        rows = batch["input_ids"].shape[0]
        micro = self.cfg.micro_batch or rows
        for start in range(0, rows, micro):
            yield start, {k: v[start : start + micro] for k, v in batch.items()}

    def _autocast(self):
        if self.env.device.startswith("cuda") and self.cfg.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self) -> dict[str, Any]:
        cfg, env = self.cfg, self.env
        start, cpu_start = time.perf_counter(), time.process_time()
        batch = next(self.batches)
        local_rows = batch["input_ids"].shape[0]
        pieces = list(self._micro_batches(batch))
        loss_sum, count, logs = 0.0, 0, {}
        for i, (offset, mb) in enumerate(pieces):
            x0 = mb["input_ids"].to(env.device)
            loss_mask = mb["loss_mask"].to(env.device)
            index = mb.get("index")
            sync = i == len(pieces) - 1
            no_sync = getattr(self.wrapped, "no_sync", None)
            ctx = no_sync() if (no_sync is not None and not sync) else nullcontext()
            if hasattr(self.wrapped, "set_requires_gradient_sync"):
                self.wrapped.set_requires_gradient_sync(sync)
            with ctx, self._autocast():
                terms = self.wrapped(x0, loss_mask, self.step, env.rank * local_rows + offset, index)
                terms.loss.backward()
            loss_sum += float(terms.loss.detach())
            count += terms.count
            for k, v in terms.logs.items():
                logs[k] = logs.get(k, 0.0) + v
        keys = sorted(logs)
        totals = env.sum([loss_sum, float(count)] + [logs[k] for k in keys])
        global_loss, global_count = totals[0], totals[1]
        logs = dict(zip(keys, totals[2:]))
        scale = env.world / max(global_count, 1.0)
        for p in self.trainable.values():
            if p.grad is not None:
                p.grad.mul_(scale)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), cfg.clip if cfg.clip > 0 else float("inf")))
        lr = lr_at(self.step, base_lr=cfg.lr, max_steps=cfg.max_steps, warmup=cfg.warmup, schedule=cfg.schedule,
                   min_lr_ratio=cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        elapsed = time.perf_counter() - start
        tokens = local_rows * batch["input_ids"].shape[1] * env.world
        record = {"step": self.step, "loss": global_loss / max(global_count, 1.0), "lr": lr, "grad_norm": grad_norm,
                  "loss_tokens": int(global_count), "tokens": tokens, "step_s": elapsed,
                  "cpu_s": time.process_time() - cpu_start,  # this process's CPU time, all threads
                  "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0, "epoch": self.batches.epoch}
        record.update(_readable(logs))
        return record

    def _evaluate(self, evaluate: Callable[[int], dict[str, Any]]) -> None:
        """Held-out metrics at this step, logged with the training time spent to reach it."""
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            result = evaluate(self.step)
        self.model.train(was_training)
        if self.env.main:
            record = {"step": self.step, "train_s": round(self.train_seconds, 3), **result}
            with self.eval_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            tqdm.write(f"eval step {self.step}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in result.items() if isinstance(v, float)))

    def _wait_while_paused(self, bar) -> None:
        """Sleep while ``OUTPUT/PAUSE`` exists (between steps, outside any step's time)."""
        if self.pause_path.exists():
            bar.set_description_str(f"paused (remove {self.pause_path} to go on)")
            while self.pause_path.exists():
                time.sleep(1.0)
            bar.set_description_str(f"train[{self.cfg.objective.kind}]")

    def run(self, resume: bool = False, evaluate: Callable[[int], dict[str, Any]] | None = None,
            override: bool = False) -> list[dict[str, Any]]:
        """Train to ``max_steps``; ``evaluate(step)`` (held-out metrics) runs at the start and every
        ``eval_every`` steps. ``resume``: from the newest good checkpoint (``override``: even when
        the configuration changed)."""
        cfg, env = self.cfg, self.env
        self.output.mkdir(parents=True, exist_ok=True)
        if env.main:
            for path, size in remove_stale_temporaries(self.output):
                self._say(f"note: removed stale {path} ({size / 2**20:.1f} MiB) left by a killed run")
        env.barrier()
        if resume:
            self.resume(override)
            if env.main:
                tqdm.write(f"resumed from step {self.step}")
        elif env.main:
            for path in (self.metrics_path, self.eval_path):
                path.unlink(missing_ok=True)
        if evaluate is not None and cfg.eval_every and self.step == 0:
            self._evaluate(evaluate)
        records = []
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not (env.main and cfg.progress),
                   desc=f"train[{cfg.objective.kind}]", unit="step", dynamic_ncols=True)
        with bar:
            while self.step < cfg.max_steps:
                self._wait_while_paused(bar)
                record = self.train_step()
                self.train_seconds += record["step_s"]
                record["train_s"] = round(self.train_seconds, 3)
                records.append(record)
                if env.main:
                    with self.metrics_path.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}",
                                    lr=f"{record['lr']:.2e}")
                last = self.step == cfg.max_steps
                if evaluate is not None and cfg.eval_every and (self.step % cfg.eval_every == 0 or last):
                    self._evaluate(evaluate)
                if (cfg.save_every and self.step % cfg.save_every == 0) or last:
                    self.save()
        return records


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON lines of a log that carry a step, and how many lines are not such records."""
    if not path.is_file():
        return [], 0
    records, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += bool(line.strip())
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        else:
            bad += 1
    return records, bad


def _readable(logs: dict[str, float]) -> dict[str, float]:
    """Per-token averages of the objective's sums, for the metrics log."""
    out = {}
    if logs.get("ar_tokens"):
        out["ar_loss"] = logs["ar_sum"] / logs["ar_tokens"]
    if logs.get("masked"):
        out["diffusion_loss"] = logs["diffusion_ce_sum"] / logs["masked"]
        out["masked_tokens"] = int(logs["masked"])
    if logs.get("draft_eligible"):
        out["draft_accuracy"] = logs["draft_hits"] / logs["draft_eligible"]
    if logs.get("draft_slots"):
        out["distill_ce"] = logs["distill_ce_sum"] / logs["draft_slots"]
        out["distill_kl"] = logs["distill_kl_sum"] / logs["draft_slots"]
        out["draft_weight"] = logs["draft_slots"]  # supervised slots this step, each weighted by its loss weight
        out["draft_eligible"] = int(logs["draft_eligible"])
    slots = sorted(int(k[4:-9]) for k in logs if k.startswith("slot") and k.endswith("_eligible"))
    if slots:
        out["slot_accuracy"] = [logs[f"slot{j}_hits"] / max(logs[f"slot{j}_eligible"], 1) for j in slots]
    if logs.get("blocks"):
        out["accepted_per_block"] = logs["accepted_sum"] / logs["blocks"]
    return out
